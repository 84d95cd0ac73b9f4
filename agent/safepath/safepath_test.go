package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
	"kmsagent/agent/tstest"
)

func TestOpenRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.MkdirAll(filepath.Join(real, "sub"), 0o755)
	os.Symlink(real, filepath.Join(dir, "link"))
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)

	tests := []struct {
		path string
		want error  // nil: opens
		link string // the component named by a *SymlinkError
	}{
		{path: filepath.Join(real, "sub")},
		{path: filepath.Join(real, "sub") + "/"},
		{path: filepath.Join(dir, "link"), want: ErrSymlink, link: filepath.Join(dir, "link")},
		{path: filepath.Join(dir, "link", "sub"), want: ErrSymlink, link: filepath.Join(dir, "link")},
		{path: filepath.Join(dir, "missing"), want: os.ErrNotExist},
		{path: filepath.Join(dir, "file"), want: unix.ENOTDIR},
	}
	for _, tt := range tests {
		for _, open := range []struct {
			name string
			fn   func(string) (func(), error)
		}{
			{"OpenDir", func(p string) (func(), error) {
				d, err := OpenDir(p)
				if err != nil {
					return nil, err
				}
				return func() { d.Close() }, nil
			}},
			{"OpenMountpoint", func(p string) (func(), error) {
				m, err := OpenMountpoint(p)
				if err != nil {
					return nil, err
				}
				return func() { m.Close() }, nil
			}},
		} {
			done, err := open.fn(tt.path)
			if tt.want == nil {
				if err != nil {
					t.Errorf("%s(%s): %v", open.name, tt.path, err)
					continue
				}
				done()
				continue
			}
			if !errors.Is(err, tt.want) && !(tt.want == unix.ENOTDIR && err != nil && strings.Contains(err.Error(), "not a directory")) {
				t.Errorf("%s(%s): %v, want %v", open.name, tt.path, err, tt.want)
			}
			var se *SymlinkError
			if tt.link != "" && (!errors.As(err, &se) || se.Link != tt.link) {
				t.Errorf("%s(%s): %v does not name the link %s", open.name, tt.path, err, tt.link)
			}
		}
	}
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	target := filepath.Join(dir, "a", "b", "c")
	d, created, err := MkdirAll(target)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	want := []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), target}
	if strings.Join(created, " ") != strings.Join(want, " ") {
		t.Fatalf("created %v, want %v", created, want)
	}
	for _, p := range want {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	if _, created, err := MkdirAll(target); err != nil || len(created) != 0 {
		t.Fatalf("existing: %v %v", created, err)
	}
	os.Symlink(dir, filepath.Join(dir, "link"))
	if _, _, err := MkdirAll(filepath.Join(dir, "link", "x")); !errors.Is(err, ErrSymlink) {
		t.Fatalf("through a symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("made a directory through a symlink")
	}
}

func TestOpenMountpointRefusesMounted(t *testing.T) {
	tstest.NeedRoot(t, "to mount")
	mp := t.TempDir()
	if err := unix.Mount("kmsagent-test", mp, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mp, unix.MNT_DETACH)
	_, err := OpenMountpoint(mp)
	var me *MountedError
	if !errors.As(err, &me) || me.FSType != "tmpfs" || me.Source != "kmsagent-test" {
		t.Fatalf("got %v, want a MountedError naming the tmpfs", err)
	}
}

// TestSwapAttack: a user who owns the parent of root's mount point
// swaps the mount point for a symlink between the check and the mount.
// The mount lands on the directory that was checked, wherever its owner
// moved it, never at the symlink's target; a symlink already in place is
// refused.
func TestSwapAttack(t *testing.T) {
	tstest.NeedRoot(t, "to mount")
	base := t.TempDir()
	// The attacker must reach their home.
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o755)
	victim := filepath.Join(base, "etc-like") // what the attacker wants hidden
	os.Mkdir(victim, 0o755)
	os.WriteFile(filepath.Join(victim, "passwd"), []byte("root"), 0o644)
	home := filepath.Join(base, "home") // the attacker's directory
	os.Mkdir(home, 0o755)
	const nobody = 65534
	if err := os.Chown(home, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(home, "mnt")
	os.Mkdir(mp, 0o755)
	os.Chown(mp, nobody, nobody)

	// The attacker's moves, done with the attacker's rights where they
	// only need those: rename within and symlink into their own home.
	asNobody := func(fn func() error) error {
		t.Helper()
		errc := make(chan error, 1)
		go func() {
			// Credentials are per thread in Linux; this thread is
			// thrown away afterwards (no UnlockOSThread).
			lockThread()
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, nobody, nobody, nobody); e != 0 {
				errc <- e
				return
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, nobody, nobody, nobody); e != 0 {
				errc <- e
				return
			}
			errc <- fn()
		}()
		return <-errc
	}

	m, err := OpenMountpoint(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	moved := filepath.Join(home, "moved")
	if err := asNobody(func() error {
		if err := os.Rename(mp, moved); err != nil {
			return err
		}
		return os.Symlink(victim, mp)
	}); err != nil {
		t.Fatalf("attacker's swap: %v", err)
	}
	if err := m.Mount("kmsagent-test", "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(moved, unix.MNT_DETACH)
	if tstest.Mounted(t, victim) {
		unix.Unmount(victim, unix.MNT_DETACH)
		t.Fatal("the mount followed the swapped-in symlink")
	}
	if _, err := os.Stat(filepath.Join(victim, "passwd")); err != nil {
		t.Fatalf("victim hidden: %v", err)
	}
	if !tstest.Mounted(t, moved) {
		t.Fatalf("mount table does not show the checked directory at its real path %s", moved)
	}
	all, _ := mountinfo.Read()
	for _, e := range all {
		if strings.HasPrefix(e.Mountpoint, "/proc/self/fd") {
			t.Fatalf("mount table shows %s", e.Mountpoint)
		}
	}
	if err := m.Unmount(0); err == nil {
		// The symlink now in the directory's place is not followed.
		t.Fatal("unmount through the swapped-in symlink succeeded")
	}

	// A symlink in place before the check is refused outright.
	if _, err := OpenMountpoint(mp); !errors.Is(err, ErrSymlink) {
		t.Fatalf("pre-planted symlink: %v", err)
	}
}

// TestMountUnmount: the mount shows at the real path, OpenMounted sees
// the mounted root, and Unmount undoes it.
func TestMountUnmount(t *testing.T) {
	tstest.NeedRoot(t, "to mount")
	mp := t.TempDir()
	m, err := OpenMountpoint(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Mount("kmsagent-test", "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if !tstest.Mounted(t, mp) {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatal("not in the mount table at its path")
	}
	root, err := m.OpenMounted()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	unix.Fstatfs(int(root.Fd()), &st)
	root.Close()
	if st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("OpenMounted opened file system type %#x, want tmpfs", st.Type)
	}
	if err := m.Unmount(0); err != nil {
		t.Fatal(err)
	}
	if tstest.Mounted(t, mp) {
		t.Fatal("still mounted")
	}
}

// lockThread wires the goroutine to its thread for good, so the thread
// with changed credentials dies with it.
func lockThread() { runtime.LockOSThread() }
