package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
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
			tstest.WaitMount(t, plain, false, 10*time.Second)
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

// TestWorkerMemoryLocked: the share worker's memory is locked (VmLck of
// the running worker), and where RLIMIT_MEMLOCK would refuse it, mount
// says so in one line naming the limit and how to raise it, and serves
// anyway.
func TestWorkerMemoryLocked(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")

	cipher, plain := shareDirs(h)
	h.mount(cipher, plain)
	os.WriteFile(filepath.Join(plain, "f"), randomBytes(1<<20), 0o600)
	pid := workerPID(t, cipher)
	if kb := procStatusKB(t, pid, "VmLck"); kb == 0 {
		t.Fatalf("worker %d has VmLck 0 kB: its keys can be swapped out", pid)
	}
	t.Logf("worker: VmLck %d kB, VmRSS %d kB", procStatusKB(t, pid, "VmLck"), procStatusKB(t, pid, "VmRSS"))
	h.must("umount", plain)

	// Without CAP_IPC_LOCK and with a small limit.
	cipher, plain = shareDirs(h)
	cmd := exec.Command("prlimit", "--memlock=65536:65536", "setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock",
		h.bin, "--config", h.config, "mount", "fuse", cipher, plain)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mount under a small RLIMIT_MEMLOCK: %v\n%s", err, out)
	}
	t.Cleanup(func() { h.kmsagent(nil, "umount", "--lazy", plain) })
	msg := strings.TrimSpace(string(out))
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "RLIMIT_MEMLOCK is 64 KiB") || !strings.Contains(msg, "LimitMEMLOCK=") || !strings.Contains(msg, "ulimit -l") {
		t.Fatalf("mount under a small RLIMIT_MEMLOCK printed %q; want one warning naming the limit and how to raise it", msg)
	}
	if err := os.WriteFile(filepath.Join(plain, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.must("umount", plain)
}

// TestLuksWorkerMemoryLocked runs the real unlock worker on the host. It
// reads its configuration from a FIFO, which holds it after it locked its
// memory and before it needs device-mapper (not on this host): VmLck is
// read while it waits there.
func TestLuksWorkerMemoryLocked(t *testing.T) {
	h := newHost(t)
	fifo := filepath.Join(h.dir, "config.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(h.bin, "--config", fifo, luksWorkerCommand, "--name", "t", "--", filepath.Join(h.dir, "vol.img"))
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Wait()
	// Opening the FIFO for writing returns once the worker opened it.
	cfg, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	kb := procStatusKB(t, cmd.Process.Pid, "VmLck")
	cfg.WriteString(fmt.Sprintf("[kms.local]\nstate_dir = %q\n", filepath.Join(h.dir, "kms")))
	cfg.Close()
	report, _ := io.ReadAll(r)
	if kb == 0 {
		t.Fatalf("unlock worker has VmLck 0 kB; it reported:\n%s", report)
	}
	if strings.Contains(string(report), "warning") {
		t.Fatalf("unlock worker warned: %s", report)
	}
}

// procStatusKB returns a "NNN kB" field of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	v := procStatus(t, pid, field)
	n, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		t.Fatalf("%s %q: %v", field, v, err)
	}
	return n
}

// TestWorkerDies: a worker that ends without unmounting (SIGKILL, or a
// fatal runtime error, here SIGABRT, which takes the runtime's crash
// path as an unrecovered panic does) leaves no mount behind: its reaper
// removes it, lazily if busy, and the share mounts again.
func TestWorkerDies(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		busy bool
	}{
		{"killed", syscall.SIGKILL, false},
		{"killed busy", syscall.SIGKILL, true},
		{"runtime crash", syscall.SIGABRT, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			cipher, plain := shareDirs(h)
			h.mount(cipher, plain)
			if tc.busy {
				f, err := os.Create(filepath.Join(plain, "open"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
			}
			if err := syscall.Kill(workerPID(t, cipher), tc.sig); err != nil {
				t.Fatal(err)
			}
			tstest.WaitMount(t, plain, false, 10*time.Second)
			if st := statusLine(h.must("status"), plain); st != "" {
				t.Fatalf("status after the reaper: %q", st)
			}
			h.mount(cipher, plain)
			h.must("umount", plain)
		})
	}
}

// TestStaleMount: a worker killed with its reaper (kill -9 of its process
// group) leaves a dead mount. status reports it as stale, to root and to
// other users; mount on it removes it first; umount removes it, busy or
// not.
func TestStaleMount(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	h.mount(cipher, plain)
	if st := statusLine(statusAs(t, h, 65534), plain); !strings.HasSuffix(st, "running") {
		t.Fatalf("status as nobody of a live worker: %q", st)
	}
	killGroup := func() {
		t.Helper()
		pid := workerPID(t, cipher)
		exited := pidExit(t, pid)
		// The worker leads its own process group, with its reaper.
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
	}
	killGroup()
	for _, uid := range []int{0, 65534} {
		st := statusLine(statusAs(t, h, uid), plain)
		if !strings.Contains(st, "stale") {
			t.Fatalf("status as uid %d of a dead worker: %q", uid, st)
		}
	}
	var js struct {
		Shares []shareStatus `json:"shares"`
	}
	if err := json.Unmarshal([]byte(h.must("status", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range js.Shares {
		if s.Mountpoint == plain {
			found = s.State == "stale"
		}
	}
	if !found {
		t.Fatalf("status --json does not show %s stale: %+v", plain, js)
	}

	_, errs, code := h.kmsagent(nil, "mount", "fuse", cipher, plain)
	if code != 0 || !strings.Contains(errs, "removed a stale mount") {
		t.Fatalf("mount over a stale mount: exit %d, %s", code, errs)
	}
	if err := os.WriteFile(filepath.Join(plain, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(plain, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	killGroup()
	if out := h.must("umount", plain); !strings.Contains(out, "removed a stale mount") {
		t.Fatalf("umount of a busy stale mount printed %q", out)
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("stale mount still there after umount")
	}
	h.refuse("not a kmsagent mount", "umount", plain)
}

// TestStatusDetached: after umount --lazy with a file open, the worker
// still serves it and holds its keys; status lists it as detached, with
// the number of open files, until the worker exits.
func TestStatusDetached(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	h.mount(cipher, plain)
	f, err := os.Create(filepath.Join(plain, "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pid := workerPID(t, cipher)
	exited := pidExit(t, pid)
	if out := h.must("umount", "--lazy", plain); !strings.Contains(out, "detached") {
		t.Fatalf("umount --lazy printed %q", out)
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("still in the mount table after umount --lazy")
	}
	// Processes root may not trace (a sandbox's PID 1) make the count a
	// lower bound.
	if st := statusLine(h.must("status"), plain); !regexp.MustCompile(`detached: unmounting, (at least )?1 open file$`).MatchString(st) {
		t.Fatalf("status of a detached mount: %q", st)
	}
	if st := statusLine(statusAs(t, h, 65534), plain); !strings.Contains(st, "detached") {
		t.Fatalf("status as nobody of a detached mount: %q", st)
	}
	f.Close()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("worker still running 10s after the last file was closed")
	}
	if st := statusLine(h.must("status"), plain); st != "" {
		t.Fatalf("status after the worker exited: %q", st)
	}
}

// statusLine returns the line of status output for mount point mp.
func statusLine(out, mp string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, mp+" ") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// statusAs runs kmsagent status as uid.
func statusAs(t *testing.T, h *host, uid int) string {
	t.Helper()
	cmd := exec.Command(h.bin, "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("status as uid %d: %v\n%s", uid, err, out)
	}
	return string(out)
}

// TestForegroundHangup: a mount served in the foreground unmounts when
// its terminal hangs up, instead of dying and leaving a dead mount.
func TestForegroundHangup(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	cmd := exec.Command(h.bin, "--config", h.config, "mount", "fuse", "--foreground", cipher, plain)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if tstest.Mounted(t, plain) {
			h.kmsagent(nil, "umount", "--lazy", plain)
		}
	})
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "serving in the foreground") {
	}
	if !tstest.Mounted(t, plain) {
		cmd.Process.Kill()
		t.Fatalf("foreground mount did not come up: %v", cmd.Wait())
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Wait only after the last read: stderr ends when the process does.
	io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("foreground mount after SIGHUP: %v", err)
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("SIGHUP left the foreground mount behind")
	}
}
