package safepath

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplaceFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.json")
	for _, tc := range []struct {
		data string
		perm os.FileMode
	}{
		{"first\n", 0o644},
		{"second, longer than the first\n", 0o600},
		{"", 0o644},
	} {
		if err := ReplaceFile(path, []byte(tc.data), tc.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != tc.data {
			t.Fatalf("after writing %q: read %q, %v", tc.data, b, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != tc.perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), tc.perm)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("the directory holds %d entries, want only the file (no temporary left)", len(ents))
		}
	}
	if err := ReplaceFile(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Error("a file in a missing directory was written")
	}
}
