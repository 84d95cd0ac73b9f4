package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

func TestOpenTrustedDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			tstest.NeedRoot(t, "to give the directory to another owner")
			if err := os.Chown(p, uid, -1); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	private := mk("private", 0o700, -1)
	shared := mk("shared", 0o755, -1)
	groupW := mk("group-writable", 0o775, -1)
	sticky := mk("sticky", 0o1777, -1)
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		path   string
		forbid os.FileMode
		want   error  // nil: opens
		say    string // in the message
	}{
		{name: "private dir, private use", path: private, forbid: 0o077},
		{name: "0755 for a log", path: shared, forbid: 0o022},
		{name: "0755 for state", path: shared, forbid: 0o077, want: ErrUntrustedDir, say: "chmod 0700"},
		{name: "group-writable", path: groupW, forbid: 0o022, want: ErrUntrustedDir, say: "mode 0775"},
		{name: "world-writable sticky", path: sticky, forbid: 0o022, want: ErrUntrustedDir, say: sticky},
		{name: "symlink", path: link, forbid: 0o022, want: ErrSymlink, say: link},
		{name: "missing", path: filepath.Join(base, "missing"), forbid: 0o022, want: os.ErrNotExist},
		{name: "owned by nobody", path: "nobody", forbid: 0o022, want: ErrUntrustedDir, say: "uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path == "nobody" {
				tt.path = mk("nobody", 0o755, 65534) // needs root
			}
			d, err := OpenTrustedDir(tt.path, tt.forbid)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				d.Close()
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.say) {
				t.Errorf("%q does not say %q", err, tt.say)
			}
		})
	}
}
