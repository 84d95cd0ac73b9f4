package initramfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "initramfs")
	want := Record{Name: "root_crypt", UUID: "0b7a3c4e-1111-4222-8333-944455556666", Source: "/dev/vda2",
		Provider: "huaweicloud", KeyID: "k1", Time: time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)}
	if err := WriteRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRecord(dir, "root_crypt")
	if err != nil || got != want {
		t.Fatalf("ReadRecord = %+v, %v; want %+v", got, err, want)
	}
	if fi, err := os.Stat(filepath.Join(dir, "root_crypt.json")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("record file: %v, %v", fi, err)
	}
	if _, err := ReadRecord(dir, "other"); !errors.Is(err, ErrNoRecord) {
		t.Errorf("missing record: %v", err)
	}
	if err := WriteRecord(dir, Record{Name: "../x"}); err == nil {
		t.Error("a name with a slash was written")
	}
	// A link is not followed, and a record of another name not taken.
	if err := os.Symlink(filepath.Join(dir, "root_crypt.json"), filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRecord(dir, "link"); err == nil {
		t.Error("a symlinked record was read")
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(dir, "root_crypt.json"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadRecord(dir, "root_crypt"); err == nil {
			t.Error("a record not owned by root was read")
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"name":"root_crypt","uuid":"u","source":"/dev/vda","kms_provider":"aws","kms_key_id":"k","time":"2026-12-01T13:00:00Z"}`), "root_crypt")
	f.Add([]byte(`{"name":"x"}`), "y")
	f.Add([]byte(`[`), "x")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		r, err := parseRecord(data, name)
		if err == nil && r.Name != name {
			t.Fatalf("record of %q accepted for %q", r.Name, name)
		}
	})
}
