package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/share"
)

// TestWorkerSignals: the worker ignores SIGHUP and keeps serving; SIGINT
// and SIGTERM unmount and end it, detaching a busy mount so that no mount
// is left behind, and the worker exits once the last open file closes.
func TestWorkerSignals(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		busy  bool // a file is open on the mount
		exits bool
	}{
		{"hangup", syscall.SIGHUP, false, false},
		{"interrupt", syscall.SIGINT, false, true},
		{"terminate", syscall.SIGTERM, false, true},
		{"terminate busy", syscall.SIGTERM, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			cipher, plain := shareDirs(h)
			h.mount(cipher, plain)
			pid := workerPID(t, cipher)
			exited := pidExit(t, pid)
			var open *os.File
			if tc.busy {
				f, err := os.Create(filepath.Join(plain, "open"))
				if err != nil {
					t.Fatal(err)
				}
				open = f
				defer f.Close()
			}
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			if !tc.exits {
				if !signalIgnored(t, pid, tc.sig) {
					t.Fatalf("worker does not ignore %v", tc.sig)
				}
				// A round trip through the worker after the signal.
				if err := os.WriteFile(filepath.Join(plain, "after"), []byte("x"), 0o600); err != nil {
					t.Fatalf("mount after %v: %v", tc.sig, err)
				}
				h.must("umount", plain)
				return
			}
			waitUnmounted(t, plain, 10*time.Second)
			if open != nil {
				if _, err := open.WriteString("still served while open"); err != nil {
					t.Fatalf("detached mount stopped serving an open file: %v", err)
				}
				select {
				case <-exited:
					t.Fatal("worker exited with a file still open")
				default:
				}
				open.Close()
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("worker %d still running 10s after %v", pid, tc.sig)
			}
			if log, ok := workerLog(t, cipher); ok && !strings.Contains(log, "keys wiped") {
				t.Fatalf("worker log has no clean end:\n%s", log)
			}
		})
	}
}

// shareDirs makes and formats a cipher directory and a mount point.
func shareDirs(h *host) (cipher, plain string) {
	h.t.Helper()
	base := h.t.TempDir()
	cipher, plain = filepath.Join(base, "c"), filepath.Join(base, "p")
	os.Mkdir(cipher, 0o700)
	os.Mkdir(plain, 0o755)
	h.must("format", "fuse", cipher, "--key-id", "k")
	// The log is named by the directory's inode, which a removed
	// directory of an earlier test may have had.
	if path, err := share.LogPath(share.DefaultRunDir, cipher); err == nil {
		os.Remove(path)
	}
	return cipher, plain
}

// pidExit returns a channel closed when process pid exits, from its
// pidfd (it need not be our child).
func pidExit(t *testing.T, pid int) <-chan struct{} {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd of %d: %v", pid, err)
	}
	done := make(chan struct{})
	go func() {
		defer unix.Close(fd)
		defer close(done)
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
			if err != unix.EINTR {
				return
			}
		}
	}()
	return done
}

// signalIgnored reads the SigIgn mask of pid.
func signalIgnored(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	v := procStatus(t, pid, "SigIgn")
	mask, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		t.Fatalf("SigIgn %q: %v", v, err)
	}
	return mask&(1<<(uint(sig)-1)) != 0
}

// procStatus returns a field of /proc/PID/status, without its name.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// waitUnmounted waits for mp to leave the mount table, woken by the
// kernel's change notification on /proc/self/mountinfo.
func waitUnmounted(t *testing.T, mp string, timeout time.Duration) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		// Reading the table to its end re-arms the notification.
		f.Seek(0, io.SeekStart)
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), " "+mp+" ") {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s still mounted after %v", mp, timeout)
		}
		unix.Poll([]unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}, int(left/time.Millisecond)+1)
	}
}

// workerLog returns the log of the share's worker where it goes to the
// file next to the lock (no syslog), and ok false where it goes to syslog.
func workerLog(t *testing.T, cipher string) (log string, ok bool) {
	t.Helper()
	if _, err := os.Stat("/dev/log"); err == nil {
		return "", false
	}
	path, err := share.LogPath(share.DefaultRunDir, cipher)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}
