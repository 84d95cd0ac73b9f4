package cryptfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
	"kmsagent/agent/safepath"
	"kmsagent/agent/tstest"
)

func mountsAt(t *testing.T, path string) []mountinfo.Entry {
	t.Helper()
	all, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var out []mountinfo.Entry
	for _, m := range all {
		if m.Mountpoint == path || strings.HasPrefix(m.Mountpoint, "/proc/self/fd/") {
			out = append(out, m)
		}
	}
	return out
}

// TestMountPoint: Mount refuses a mount point reached through a symlink
// (root's mount would land wherever the link's owner points it) and one
// already mounted on; a mount shows in the mount table at its real path,
// not as the /proc/self/fd path it was made through, and Unmount finds it.
func TestMountPoint(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	base := t.TempDir()
	target := filepath.Join(base, "etc")
	os.Mkdir(target, 0o755)
	link := filepath.Join(base, "mnt")
	os.Symlink(target, link)
	newRoot := func() *node {
		r, err := NewRoot(Options{CipherDir: cipher, Core: k.core})
		if err != nil {
			t.Fatal(err)
		}
		return r.(*node)
	}

	for _, mp := range []string{link, filepath.Join(link, ".")} {
		srv, err := Mount(mp, newRoot(), MountOptions{})
		if err == nil {
			srv.Unmount()
			t.Fatalf("mounted through the symlink %s", mp)
		}
		if !errors.Is(err, safepath.ErrSymlink) {
			t.Fatalf("%s: %v, want ErrSymlink", mp, err)
		}
		if ms := mountsAt(t, target); len(ms) != 0 {
			t.Fatalf("mount landed at the link's target: %v", ms)
		}
	}

	mp := filepath.Join(base, "plain")
	os.Mkdir(mp, 0o755)
	srv, err := Mount(mp, newRoot(), MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms := mountsAt(t, mp)
	if len(ms) != 1 || ms[0].Mountpoint != mp || ms[0].FSType != "fuse."+Subtype {
		srv.Unmount()
		t.Fatalf("mount table: %+v, want one fuse.%s mount at %s", ms, Subtype, mp)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(mp, newRoot(), MountOptions{}); !errors.Is(err, safepath.ErrMounted) {
		t.Fatalf("second mount on %s: %v, want ErrMounted", mp, err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if ms := mountsAt(t, mp); len(ms) != 0 {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatalf("still mounted: %v", ms)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
}
