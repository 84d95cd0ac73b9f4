package tstest

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
)

// Mounted reports whether dir is a mount point, from the mount table.
func Mounted(t testing.TB, dir string) bool {
	t.Helper()
	all, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Mountpoint == dir {
			return true
		}
	}
	return false
}

// WaitMount waits up to timeout for dir to become a mount point (mounted
// true) or to stop being one. Mounts made or removed by another process
// (a FUSE worker, fusermount3) have no other signal than the mount table,
// which the kernel marks changed (POLLPRI) on every change: the wait
// sleeps on that, not on a timer.
func WaitMount(t testing.TB, dir string, mounted bool, timeout time.Duration) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		// Reading the table to its end re-arms the notification.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		all, err := mountinfo.Parse(f)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range all {
			found = found || m.Mountpoint == dir
		}
		if found == mounted {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			if mounted {
				t.Fatalf("%s not mounted after %v", dir, timeout)
			}
			t.Fatalf("%s still mounted after %v", dir, timeout)
		}
		_, err = unix.Poll([]unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}, int(left/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll /proc/self/mountinfo: %v", err)
		}
	}
}
