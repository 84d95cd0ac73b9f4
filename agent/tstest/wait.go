package tstest

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often Poll checks its condition.
const pollInterval = 10 * time.Millisecond

// Poll checks cond until it holds or timeout passes and reports whether
// it held.
//
// Polling is for what nothing signals: the kernel tidies up some state
// asynchronously (an invalidated key's garbage collection, a deferred
// device removal, the release of a FUSE mount's last file that makes an
// unmount stop failing with EBUSY, a mount made by another process), and
// an external server that offers no readiness notification can only be
// asked. Where the code under test can signal (a channel, a pipe, a
// process exit, testing/synctest for timers), wait for that instead.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
	return true
}

// WaitFor is Poll that fails the test when cond does not hold within
// timeout; what names the condition in the failure ("the mount to
// appear").
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// WaitExit waits up to timeout for the process pid, which need not be a
// child of the test, to exit, and reports whether it did. It waits on a
// pidfd, which becomes readable when the process exits.
func WaitExit(t testing.TB, pid int, timeout time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds()))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			t.Fatalf("poll on the pidfd of %d: %v", pid, err)
		}
		return n > 0
	}
}
