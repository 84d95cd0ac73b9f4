package service

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"kmsagent/agent/config"
	"kmsagent/fuse/share"
)

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	mkdir := func(name string, files ...string) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(p, f), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	file := func(name string, head []byte) string {
		p := filepath.Join(dir, name)
		b := make([]byte, 1<<20)
		copy(b, head)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		source  string
		want    Kind
		wantErr error
	}{
		{"share", mkdir("share", "kmsagent.json", "gocryptfs.diriv"), KindShare, nil},
		{"gocryptfs tree", mkdir("gocryptfs", "gocryptfs.diriv"), KindShare, nil},
		{"plain directory", mkdir("plain", "notes.txt"), "", ErrUnknownKind},
		{"luks2 image", file("luks2.img", []byte("LUKS\xba\xbe\x00\x02")), KindLUKS, nil},
		{"luks1 image", file("luks1.img", []byte("LUKS\xba\xbe\x00\x01")), KindLUKS, nil},
		{"zeros", file("zeros.img", nil), "", ErrUnknownKind},
		{"missing", filepath.Join(dir, "missing"), "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Probe(tt.source)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Probe = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// A source Probe cannot place goes to the reader of the kind it
	// looks like, whose error explains it.
	if k := KindOf(filepath.Join(dir, "plain")); k != KindShare {
		t.Errorf("KindOf(plain directory) = %q", k)
	}
	if k := KindOf(filepath.Join(dir, "zeros.img")); k != KindLUKS {
		t.Errorf("KindOf(zeros) = %q", k)
	}
}

func TestShareOptions(t *testing.T) {
	var err *OptionError
	if e := parseShareOptions([]string{"ro", "bogus"}, &share.ServeOptions{}); !errors.As(e, &err) || err.Option != "bogus" {
		t.Fatalf("parseShareOptions(bogus) = %v", e)
	}
}

// TestMountMissingSource: a share whose cipher directory is missing and
// a LUKS2 volume whose device is missing fail before any worker or KMS
// call, with an error that says the path does not exist (not "not a
// share", whose advice is to format it).
func TestMountMissingSource(t *testing.T) {
	dir := t.TempDir()
	svc, err := New(Options{Config: config.Default(), Executable: "/nonexistent", RunDir: filepath.Join(dir, "run")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Kind: KindShare, Source: filepath.Join(dir, "gone"), Target: dir}, "cipher directory: stat " + filepath.Join(dir, "gone") + ": no such file or directory"},
		{Spec{Kind: KindLUKS, Name: "v", Source: filepath.Join(dir, "disk")}, "device: stat " + filepath.Join(dir, "disk") + ": no such file or directory"},
	}
	for _, tt := range tests {
		_, err := svc.Mount(t.Context(), tt.spec)
		if !errors.Is(err, fs.ErrNotExist) || err.Error() != tt.want {
			t.Errorf("Mount(%s): %v, want %q", tt.spec.Source, err, tt.want)
		}
	}
}
