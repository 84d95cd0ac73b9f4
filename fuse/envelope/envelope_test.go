package envelope

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/agent/uuid"
	"kmsagent/kmsclient"
)

func TestNewWriteReadUnwrap(t *testing.T) {
	ctx := context.Background()
	s, keyID := tstest.LocalKMS(t, "")
	e, master, err := New(ctx, s, keyID)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Wipe()
	dir := t.TempDir()
	d := openDir(t, dir)
	if err := e.WriteAt(d, false); err != nil {
		t.Fatal(err)
	}
	var exists *ExistsError
	if err := e.WriteAt(d, false); !errors.As(err, &exists) {
		t.Fatalf("second write: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("envelope mode: %v %v", fi.Mode(), err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	k, err := got.Unwrap(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	if !k.Equal(master) {
		t.Fatal("unwrapped a different key")
	}

	// Re-wrap under a new key: same master key, new key id.
	info, _ := s.CreateKey(ctx, "", "")
	if err := got.Rewrap(ctx, s, info.ID); err != nil {
		t.Fatal(err)
	}
	if err := got.WriteAt(d, true); err != nil {
		t.Fatal(err)
	}
	again, _ := ReadAt(d)
	k2, err := again.Unwrap(ctx, s)
	if err != nil || !k2.Equal(master) || again.KMS.KeyID != info.ID {
		t.Fatalf("after rewrap: %v", err)
	}
	k2.Wipe()
}

func TestUnwrapRefusals(t *testing.T) {
	ctx := context.Background()
	s, keyID := tstest.LocalKMS(t, "")
	e, master, err := New(ctx, s, keyID)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Wipe()
	other, otherMaster, _ := New(ctx, s, keyID)
	defer otherMaster.Wipe()

	moved := *e
	moved.VolumeUUID = other.VolumeUUID // an envelope copied onto another share
	if _, err := moved.Unwrap(ctx, s); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
		t.Fatalf("moved envelope: %v", err)
	}
	swapped := *e
	swapped.KeyCheck = other.KeyCheck
	if _, err := swapped.Unwrap(ctx, s); err == nil || !strings.Contains(err.Error(), "key check") {
		t.Fatalf("wrong key check: %v", err)
	}
	if err := e.Check(otherMaster); err == nil {
		t.Fatal("other master key accepted")
	}
	foreign := *e
	foreign.KMS.Provider = "aws"
	if _, err := foreign.Unwrap(ctx, s); err == nil || !strings.Contains(err.Error(), `provider = "aws"`) {
		t.Fatalf("provider mismatch: %v", err)
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	s, keyID := tstest.LocalKMS(t, "")
	master, _ := secret.Random(MasterKeyLen)
	defer master.Wipe()
	e, err := Import(ctx, s, keyID, master)
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.Unwrap(ctx, s)
	if err != nil || !k.Equal(master) {
		t.Fatalf("import round trip: %v", err)
	}
	k.Wipe()
	short, _ := secret.Random(16)
	defer short.Wipe()
	if _, err := Import(ctx, s, keyID, short); err == nil {
		t.Fatal("16-byte master key accepted")
	}
}

func valid(t *testing.T) map[string]any {
	e := &Envelope{Version: 1, Format: FormatV2, FeatureFlags: FeatureFlags, VolumeUUID: uuid.New().String(),
		KMS: KMSRef{Provider: "local", KeyID: "k", WrappedKey: []byte{1}}, KeyCheck: make([]byte, 32)}
	b, _ := json.Marshal(e)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(m map[string]any)
		want   string
	}{
		{"valid", func(map[string]any) {}, ""},
		{"version", func(m map[string]any) { m["version"] = 2 }, "upgrade kmsagent"},
		{"format", func(m map[string]any) { m["format"] = "gocryptfs-v1" }, "format"},
		{"flags", func(m map[string]any) { m["feature_flags"] = []string{"HKDF"} }, "feature flags"},
		{"unknown member", func(m map[string]any) { m["extra"] = 1 }, "unknown field"},
		{"uuid", func(m map[string]any) { m["volume_uuid"] = "x" }, "volume uuid"},
		{"no wrapped key", func(m map[string]any) { m["kms"].(map[string]any)["wrapped_key"] = "" }, "wrapped key"},
		{"no key id", func(m map[string]any) { m["kms"].(map[string]any)["key_id"] = "" }, "key id"},
		{"short check", func(m map[string]any) { m["key_check"] = "AAAA" }, "key check"},
		{"wrong type", func(m map[string]any) { m["version"] = "1" }, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid(t)
			tt.change(m)
			b, _ := json.Marshal(m)
			_, err := Parse(b)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestReadMissing(t *testing.T) {
	dir := t.TempDir()
	var notShare *NotShareError
	if _, err := Read(dir); !errors.As(err, &notShare) || notShare.Dir != dir {
		t.Fatalf("got %v", err)
	}
	os.Symlink("/etc/passwd", filepath.Join(dir, FileName))
	if _, err := Read(dir); err == nil {
		t.Fatal("followed a symlink")
	}
}

func FuzzParse(f *testing.F) {
	b, _ := json.Marshal(valid(nil))
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			return
		}
		if err := e.validate(); err != nil {
			t.Fatalf("accepted an invalid envelope: %v", err)
		}
	})
}

func openDir(t *testing.T, dir string) *os.File {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestWriteAtMode: a new envelope is 0600 whatever the umask; a
// replacement keeps a group the admin granted read to, and drops the
// world-readable mode earlier versions wrote; a symlink in the
// envelope's place is neither followed nor replaced.
func TestWriteAtMode(t *testing.T) {
	ctx := context.Background()
	s, keyID := tstest.LocalKMS(t, "")
	e, master, err := New(ctx, s, keyID)
	if err != nil {
		t.Fatal(err)
	}
	master.Wipe()
	old := unix.Umask(0)
	defer unix.Umask(old)

	tests := []struct {
		name     string
		existing os.FileMode // 0: none
		gid      int
		wantMode os.FileMode
		wantGid  int
	}{
		{name: "new", wantMode: 0o600},
		{name: "replace 0600", existing: 0o600, wantMode: 0o600},
		{name: "replace group-readable", existing: 0o640, gid: 4321, wantMode: 0o640, wantGid: 4321},
		{name: "replace world-readable", existing: 0o444, gid: 4321, wantMode: 0o600},
		{name: "replace group-writable", existing: 0o660, wantMode: 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if tt.existing != 0 {
				os.WriteFile(path, []byte("{}"), tt.existing)
				os.Chmod(path, tt.existing)
				if tt.gid != 0 {
					if err := os.Chown(path, -1, tt.gid); err != nil {
						t.Skipf("chown: %v", err)
					}
				}
			}
			if err := e.WriteAt(openDir(t, dir), tt.existing != 0); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			if got := os.FileMode(st.Mode & 0o7777); got != tt.wantMode {
				t.Errorf("mode %v, want %v", got, tt.wantMode)
			}
			wantGid := tt.wantGid
			if wantGid == 0 {
				wantGid = os.Getegid()
			}
			if int(st.Gid) != wantGid {
				t.Errorf("gid %d, want %d", st.Gid, wantGid)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}

	t.Run("symlink in place", func(t *testing.T) {
		dir, elsewhere := t.TempDir(), t.TempDir()
		target := filepath.Join(elsewhere, "x")
		os.WriteFile(target, []byte("keep"), 0o644)
		os.Symlink(target, filepath.Join(dir, FileName))
		d := openDir(t, dir)
		if err := e.WriteAt(d, true); err == nil {
			t.Fatal("replaced a symlink")
		}
		if _, err := ReadAt(d); err == nil {
			t.Fatal("read through a symlink")
		}
		if b, _ := os.ReadFile(target); string(b) != "keep" {
			t.Fatal("wrote through the symlink")
		}
	})
}
