package tstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/kmsclient/local"
)

// LocalKMS opens an embedded KMS in a temporary directory and creates one
// key in it with the given alias ("" for none); it returns the store and
// the key's id.
func LocalKMS(t testing.TB, alias string) (*local.Store, string) {
	t.Helper()
	s, err := local.Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.CreateKey(context.Background(), alias, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, info.ID
}

// kmsagentBuild is the kmsagent binary built for this test process; the
// build takes seconds, so every test of the process shares it.
var kmsagentBuild struct {
	once sync.Once
	path string
	err  error
}

// Kmsagent builds the kmsagent command once per test process and returns
// its path. The binary lies in a directory everyone may enter, because
// tests run it as other users too. End-to-end tests use it where the
// command re-executes itself (the share worker) or runs as a separate
// process.
func Kmsagent(t testing.TB) string {
	t.Helper()
	b := &kmsagentBuild
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "kmsagent-bin-")
		if err != nil {
			b.err = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "kmsagent")
		out, err := exec.Command("go", "build", "-o", b.path, "kmsagent/cmd/kmsagent").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build kmsagent/cmd/kmsagent: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// LoopExt4 makes a new, empty ext4 file system of size bytes (4096-byte
// blocks, no reserved blocks) in an image file, mounts it through a loop
// device on a temporary directory and returns the mount point. It needs
// root and e2fsprogs; the file system is unmounted when the test ends.
func LoopExt4(t testing.TB, size int64) string {
	t.Helper()
	NeedRoot(t, "to mount a loop device")
	mkfs := NeedTool(t, "mkfs.ext4", "e2fsprogs")
	mount := NeedTool(t, "mount", "mount")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", "-b", "4096", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mount, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		Unavailable(t, "mount -o loop (needs loop devices): %v: %s", err, out)
	}
	// Lazily: a FUSE server on top may still hold a file open for a
	// moment, as the kernel sends the release of a file closed just
	// before an unmount asynchronously.
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}
