package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/audit"
	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
	"kmsagent/agent/tstest"
)

// notifySocket is a stand-in for systemd's NOTIFY_SOCKET: it collects
// the daemon's sd_notify messages.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t testing.TB, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifySocket{path: path, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				n.msgs <- line
			}
		}
	}()
	return n
}

// drain drops the messages received so far.
func (n *notifySocket) drain() {
	for {
		select {
		case _, ok := <-n.msgs:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// await returns the first message starting with prefix, failing after
// a generous bound (a slow CI machine, not a synchronisation sleep).
func (n *notifySocket) await(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed before %s", prefix)
			}
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s from the daemon", prefix)
		}
	}
}

// TestRunDaemon starts the real `kmsagent run` with the embedded local
// KMS, a temporary control socket and a stand-in for systemd, and talks
// to it as the CLI will: status, health, metrics, reload (bad, then
// SIGHUP with a new volume), and SIGTERM.
func TestRunDaemon(t *testing.T) {
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	base := fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\ncryptsetup_socket = \"\"\n",
		filepath.Join(dir, "kms"), sock, filepath.Join(dir, "state"), filepath.Join(dir, "audit.log"))
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), base, 0o600)
	notify := newNotifySocket(t, dir)

	cmd := exec.Command(bin, "--config", cfg, "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=200000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("daemon log:\n%s", stderr.String())
		}
	})

	notify.await(t, "READY=1")
	notify.await(t, "WATCHDOG=1")
	c := control.NewClient(sock)
	defer c.Close()
	ctx := t.Context()
	st, err := c.Status(ctx)
	// Other tests' shares may be mounted on this host meanwhile; the
	// daemon lists them as not its own.
	if err != nil || st.Status != "0 volumes unlocked" || len(managed(st)) != 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if h, err := c.Health(ctx); err != nil || !h.OK {
		t.Fatalf("health: %+v %v", h, err)
	}
	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`kmsagent_volumes{state="mounted"} 0`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v %v, want mode 0600", fi.Mode(), err)
	}

	// A bad configuration is refused and changes nothing.
	writeFile(t, cfg, base+"\n[[volume]]\nname = \"s\"\ntype = \"fuse\"\nsource = \"cipher\"\ntarget = \"/mnt/s\"\n", 0o600)
	if _, err := c.Reload(ctx); !errors.Is(err, control.ErrBadConfig) || !strings.Contains(err.Error(), `volume "s": source = "cipher"`) {
		t.Fatalf("bad reload: %v", err)
	}
	notify.await(t, "RELOADING=1")
	notify.await(t, "READY=1")
	// SIGHUP adds a volume.
	writeFile(t, cfg, base+fmt.Sprintf("\n[[volume]]\nname = \"s\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\n", filepath.Join(dir, "cipher"), filepath.Join(dir, "mnt")), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	notify.await(t, "RELOADING=1")
	notify.await(t, "READY=1")
	st, err = c.Status(ctx)
	if v := managed(st); err != nil || len(v) != 1 || v[0].Name != "s" || v[0].State != daemon.StateUnmounted {
		t.Fatalf("status after SIGHUP: %+v %v", st, err)
	}

	// A mount through the socket is audited with this process as the
	// caller; it fails, as the cipher directory was never made.
	if _, err := c.Mount(ctx, "s"); err == nil {
		t.Error("mount of s succeeded")
	}
	res, err := audit.ReadFiles(filepath.Join(dir, "audit.log"))
	if err != nil || len(res.Records) != 1 {
		t.Fatalf("audit log: %+v %v", res, err)
	}
	if r := res.Records[0]; r.UID != os.Getuid() || r.PID != os.Getpid() || r.Volume != "s" || r.Op != audit.OpUnwrap || r.Kind != audit.KindShare || r.Result != "error" || r.Error == "" {
		t.Errorf("audit record %+v", r)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	notify.await(t, "STOPPING=1")
	if err := <-exited; err != nil {
		t.Fatalf("exit: %v", err)
	}
	exited <- nil
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if !strings.Contains(stderr.String(), "run: following block device events") {
		t.Error("the daemon does not follow block device events")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "state.json")); err != nil {
		t.Errorf("no state file: %v", err)
	}
}

// TestRunDaemonStateLocked: a second `kmsagent run` on the same state
// directory stops at start with one line naming the first one's pid, and
// leaves the first one's socket alone.
func TestRunDaemonStateLocked(t *testing.T) {
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\ncryptsetup_socket = \"\"\n",
		filepath.Join(dir, "kms"), sock, filepath.Join(dir, "state"), filepath.Join(dir, "log", "audit.log")), 0o600)
	notify := newNotifySocket(t, dir)
	first := exec.Command(bin, "--config", cfg, "run")
	first.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	var stderr strings.Builder
	first.Stderr = &stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		first.Process.Signal(syscall.SIGTERM)
		first.Wait()
		if t.Failed() {
			t.Logf("first daemon's log:\n%s", stderr.String())
		}
	})
	notify.await(t, "READY=1")

	second := exec.Command(bin, "--config", cfg, "run", "--socket", filepath.Join(dir, "second.sock"))
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("second daemon: %v\n%s", err, out)
	}
	msg := strings.TrimSpace(string(out))
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, fmt.Sprintf("in use by process %d", first.Process.Pid)) {
		t.Errorf("second daemon's error, want one line naming pid %d:\n%s", first.Process.Pid, msg)
	}
	if _, err := os.Stat(filepath.Join(dir, "second.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the second daemon made its socket: %v", err)
	}
	if _, err := control.NewClient(sock).Health(t.Context()); err != nil {
		t.Errorf("the first daemon no longer answers: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "log", "audit.log")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log: %v %v", fi, err)
	}
}

// TestRunDaemonCorruptState: a damaged state file is reported and
// rebuilt; the daemon starts.
func TestRunDaemonCorruptState(t *testing.T) {
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(stateDir, "state.json"), "{\"version\": 1, \"state\": {\"volu", 0o600)
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\ncryptsetup_socket = \"\"\n",
		filepath.Join(dir, "kms"), filepath.Join(dir, "agent.sock"), stateDir, filepath.Join(dir, "audit.log")), 0o600)
	notify := newNotifySocket(t, dir)
	cmd := exec.Command(bin, "--config", cfg, "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	var stderr tstest.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	notify.await(t, "READY=1")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "state file not used; rebuilt from what the kernel reports") || !strings.Contains(stderr.String(), "is damaged") {
		t.Errorf("the damaged state file is not reported:\n%s", stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil || !strings.Contains(string(b), `"volumes": []`) {
		t.Errorf("state file not rebuilt: %s %v", b, err)
	}
}

// managed is the volumes of the daemon's configuration in st.
func managed(st control.StatusReply) []daemon.VolumeInfo {
	var out []daemon.VolumeInfo
	for _, v := range st.Volumes {
		if v.Managed {
			out = append(out, v)
		}
	}
	return out
}
