package cryptfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// runHelperAs runs the helper copy of the test binary bin as helper h on
// path with the given user and group.
func runHelperAs(t *testing.T, bin string, uid, gid uint32, h, path string) {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{"CRYPTFS_TEST_HELPER=" + h, "CRYPTFS_TEST_PATH=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s as %d:%d: %v\n%s", h, uid, gid, err, out)
	}
}

// copyExecutable copies the running test binary to dir, so that another
// user can run it.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(dir, "helper")
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNewEntryOwnerAndMode creates files, set-ID files, a directory, a
// fifo and a symlink, as root and as another user, in a set-group-ID
// directory and in a plain one, both in the mount and on the backing file
// system; owner, group and mode must come out the same. In a set-group-ID
// directory new entries take its group and new subdirectories the bit.
func TestNewEntryOwnerAndMode(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	m := mountFS(t, newCipherDir(t), k, Options{}, MountOptions{AllowOther: true})
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	// Let the other user reach both trees and run the helper.
	for _, d := range []string{m.mnt, m.mnt + "/..", m.mnt + "/../..", plain + "/..", plain + "/../.."} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := copyExecutable(t, plain+"/..")

	const uid, gid, group = 4242, 4242, 4343
	dirs := []struct {
		name      string
		mode      os.FileMode
		gid       int
		uid, cgid uint32 // the creating user
	}{
		{"setgid-user", os.ModeSetgid | 0o777, group, uid, gid},
		{"setgid-root", os.ModeSetgid | 0o777, group, 0, 0},
		{"plain-user", 0o777, 0, uid, gid},
		{"plain-root", 0o777, 0, 0, 0},
	}
	for _, top := range []string{m.mnt, plain} {
		for _, d := range dirs {
			p := filepath.Join(top, d.name)
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 0, d.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, d.mode); err != nil {
				t.Fatal(err)
			}
			runHelperAs(t, bin, d.uid, d.cgid, "mkentries", p)
		}
	}
	for _, d := range dirs {
		for _, e := range []string{"", "f", "suid", "sgid", "d", "fifo", "l"} {
			want, err := os.Lstat(filepath.Join(plain, d.name, e))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.Lstat(filepath.Join(m.mnt, d.name, e))
			if err != nil {
				t.Fatal(err)
			}
			ws, gs := want.Sys().(*syscall.Stat_t), got.Sys().(*syscall.Stat_t)
			if got.Mode() != want.Mode() || gs.Uid != ws.Uid || gs.Gid != ws.Gid {
				t.Errorf("%s/%s: %v %d:%d, want %v %d:%d (as on the backing file system)",
					d.name, e, got.Mode(), gs.Uid, gs.Gid, want.Mode(), ws.Uid, ws.Gid)
			}
		}
	}
}

// TestCreateExistingKeepsOwner makes the kernel send CREATE for a name
// that exists (its negative entry is cached while another mount of the
// same cipher directory creates the file): the file must be opened as it
// is, not given to the caller.
func TestCreateExistingKeepsOwner(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	long := time.Hour
	m := mountFS(t, cipher, k, Options{}, MountOptions{AllowOther: true, NegativeTimeout: &long})
	other := mountFS(t, cipher, k, Options{}, MountOptions{})
	for _, d := range []string{m.mnt + "/..", m.mnt + "/../.."} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(m.mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.path("f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat: %v", err)
	}
	if err := os.WriteFile(other.path("f"), []byte("root's\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(other.path("f"), 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `echo more >> "$M/f"`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	cmd.Env = []string{"M=" + m.mnt}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("append as another user: %v\n%s", err, out)
	}
	st, err := os.Stat(other.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Sys().(*syscall.Stat_t); s.Uid != 0 || s.Gid != 0 {
		t.Errorf("owner %d:%d, want 0:0: the existing file was given to the caller", s.Uid, s.Gid)
	}
	mustEqualFile(t, other.path("f"), []byte("root's\nmore\n"))
}

// TestWriteClearsSetID writes, truncates, allocates and opens with O_TRUNC set-ID
// files as their owner and as root, in the mount and on the backing file
// system: the modes must come out the same. An unprivileged writer clears
// set-user-ID, and set-group-ID when the file is group-executable; root
// (CAP_FSETID) keeps both. The mount clears them itself (killpriv.go).
func TestWriteClearsSetID(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	m := mountFS(t, newCipherDir(t), k, Options{}, MountOptions{AllowOther: true})
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.Mkdir(plain, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{m.mnt, m.mnt + "/..", m.mnt + "/../..", plain + "/..", plain + "/../.."} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := copyExecutable(t, plain+"/..")

	const uid, gid = 4242, 4242
	modes := []os.FileMode{
		os.ModeSetuid | os.ModeSetgid | 0o775, // both cleared
		os.ModeSetgid | 0o745,                 // not group-executable: kept
		os.ModeSetuid | 0o700,
	}
	for _, op := range []string{"write", "truncate", "open-trunc", "fallocate"} {
		for _, who := range []uint32{uid, 0} {
			for i, mode := range modes {
				name := fmt.Sprintf("%s-%d-%d", op, who, i)
				var want, got os.FileMode
				for _, top := range []string{plain, m.mnt} {
					p := filepath.Join(top, name)
					if err := os.WriteFile(p, []byte("content"), 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Chown(p, uid, gid); err != nil {
						t.Fatal(err)
					}
					if err := os.Chmod(p, mode); err != nil {
						t.Fatal(err)
					}
					runHelperAs(t, bin, who, who, op, p)
					fi, err := os.Lstat(p)
					if err != nil {
						t.Fatal(err)
					}
					if top == plain {
						want = fi.Mode()
					} else {
						got = fi.Mode()
					}
				}
				if got != want {
					t.Errorf("%s as %d of a %v file: mode %v, want %v (as on the backing file system)", op, who, mode, got, want)
				}
			}
		}
	}
}
