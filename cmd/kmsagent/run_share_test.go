package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
	"kmsagent/agent/tstest"
)

// TestRunDaemonShares: the real daemon mounts its auto shares at start
// through real workers, one with a disabled key fails alone without
// holding back READY, a kill -9 of the daemon leaves the mount serving,
// the next daemon adopts it with the same worker, a killed worker's share
// is mounted again, and an unmount through the CLI ends the worker.
func TestRunDaemonShares(t *testing.T) {
	h := newDaemonHost(t)
	bin, dir, sock, cfg, cli := h.bin, h.dir, h.sock, h.cfg, h.cli
	cli("kms", "create-key", "--alias", "good")
	cli("kms", "create-key", "--alias", "bad")
	vols := ""
	for _, v := range []struct{ name, key string }{{"data", "good"}, {"off", "bad"}} {
		cipher, plain := filepath.Join(dir, v.name+"-cipher"), filepath.Join(dir, v.name)
		cli("format", "fuse", cipher, "--key-id", v.key)
		if err := os.Mkdir(plain, 0o755); err != nil {
			t.Fatal(err)
		}
		vols += fmt.Sprintf("\n[[volume]]\nname = %q\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n", v.name, cipher, plain)
	}
	cli("kms", "disable-key", "bad")
	h.addVolumes(vols)
	plain := filepath.Join(dir, "data")
	t.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })

	byName := func(st control.StatusReply) map[string]daemon.VolumeInfo {
		m := map[string]daemon.VolumeInfo{}
		for _, v := range st.Volumes {
			m[v.Name] = v
		}
		return m
	}

	cmd, notify := startDaemon(t, bin, cfg)
	notify.await(t, "READY=1")
	c := control.NewClient(sock)
	defer c.Close()
	ctx := t.Context()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vs := byName(st)
	if vs["data"].State != daemon.StateMounted || vs["data"].WorkerPID == 0 {
		t.Fatalf("data: %+v", vs["data"])
	}
	if vs["off"].State != daemon.StateFailed || vs["off"].ErrorKind != "key_disabled" {
		t.Fatalf("off: %+v", vs["off"])
	}
	worker := vs["data"].WorkerPID
	if err := os.WriteFile(filepath.Join(plain, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	// kill -9: the mount keeps serving.
	cmd.Process.Kill()
	cmd.Wait()
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after kill -9 of the daemon: %q %v", b, err)
	}
	_, notify = startDaemon(t, bin, cfg)
	notify.await(t, "READY=1")
	st, err = c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := byName(st)["data"]; v.State != daemon.StateMounted || v.WorkerPID != worker {
		t.Fatalf("after restart: %+v, want mounted by worker %d", v, worker)
	}

	// The worker dies: the daemon notices within its check interval
	// and, the share being auto, mounts it again with a new worker.
	syscall.Kill(worker, syscall.SIGKILL)
	tstest.WaitFor(t, 60*time.Second, "the daemon to mount data again", func() bool {
		st, err := c.Status(ctx)
		v := byName(st)["data"]
		return err == nil && v.State == daemon.StateMounted && v.WorkerPID != 0 && v.WorkerPID != worker
	})
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after the daemon mounted data again: %q %v", b, err)
	}
	st, _ = c.Status(ctx)
	worker = byName(st)["data"].WorkerPID

	// The CLI is a client of the daemon: status shows the daemon's
	// table, umount NAME and mount NAME go through it.
	if out := cli("status"); !strings.Contains(out, "daemon: ") || !regexp.MustCompile(`(?m)^off\s+fuse\s+failed`).MatchString(out) || !regexp.MustCompile(`(?m)^data\s+fuse\s+mounted`).MatchString(out) {
		t.Fatalf("status does not show the daemon's volumes:\n%s", out)
	}
	if out := cli("umount", "data"); !strings.Contains(out, "unmounted by the daemon") {
		t.Fatalf("umount data: %s", out)
	}
	if !tstest.WaitExit(t, worker, 10*time.Second) {
		t.Fatal("the worker did not exit after the unmount")
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("still mounted after unmount through the daemon")
	}
	cli("mount", "data")
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after mount data through the daemon: %q %v", b, err)
	}
	cli("umount", plain)
	if tstest.Mounted(t, plain) {
		t.Fatal("still mounted after umount of the mount point")
	}
}

// startDaemon starts `kmsagent run` with config cfg and a stand-in for
// systemd's notify socket; the test's cleanup kills it.
func startDaemon(t *testing.T, bin, cfg string) (*exec.Cmd, *notifySocket) {
	t.Helper()
	return startNotifying(t, "daemon", bin, "--config", cfg, "run")
}

// startNotifying starts bin with args and a stand-in for systemd's
// notify socket; the test's cleanup kills it and, when the test failed,
// logs its standard error under the name what.
func startNotifying(t *testing.T, what, bin string, args ...string) (*exec.Cmd, *notifySocket) {
	t.Helper()
	notify := newNotifySocket(t, t.TempDir())
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", what, stderr.String())
		}
	})
	return cmd, notify
}

// daemonHost is a kmsagent binary with a configuration of its own: the
// embedded KMS, control socket, state and audit log in a temporary
// directory, for tests that run the daemon.
type daemonHost struct {
	t                   *testing.T
	bin, dir, sock, cfg string
	// The crypttab key socket and the crypttab it reads.
	keySock, crypttab string
}

func newDaemonHost(t *testing.T) *daemonHost {
	t.Helper()
	return newDaemonHostKMS(t, func(dir string) string {
		return fmt.Sprintf("[kms.local]\nstate_dir = %q\n", filepath.Join(dir, "kms"))
	})
}

// newDaemonHostKMS is newDaemonHost with the [kms] tables kms returns
// for the host's directory, and agent settings (extra [agent] lines)
// after them.
func newDaemonHostKMS(t *testing.T, kms func(dir string) string, agent ...string) *daemonHost {
	t.Helper()
	tstest.NeedRoot(t, "to mount FUSE")
	dir := t.TempDir()
	h := &daemonHost{t: t, bin: tstest.Kmsagent(t), dir: dir, sock: filepath.Join(dir, "run", "agent.sock")}
	h.keySock, h.crypttab = filepath.Join(dir, "run", "cryptsetup.sock"), filepath.Join(dir, "crypttab")
	h.cfg = writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("%s\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\ncryptsetup_socket = %q\ncrypttab = %q\n%s",
		kms(dir), h.sock, filepath.Join(dir, "state"), filepath.Join(dir, "audit.log"), h.keySock, h.crypttab, strings.Join(agent, "")), 0o600)
	return h
}

// cli runs a kmsagent command with the host's configuration and returns
// its standard output; a failure fails the test.
func (h *daemonHost) cli(args ...string) string {
	h.t.Helper()
	cmd := exec.Command(h.bin, append([]string{"--config", h.cfg}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("kmsagent %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// addVolumes appends [[volume]] tables to the configuration.
func (h *daemonHost) addVolumes(toml string) {
	h.t.Helper()
	f, err := os.OpenFile(h.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(toml); err != nil {
		h.t.Fatal(err)
	}
}

// TestRunRelativeConfig: a daemon started with a relative --config hands
// its share workers, which start in /, the same file.
func TestRunRelativeConfig(t *testing.T) {
	h := newDaemonHost(t)
	h.cli("kms", "create-key", "--alias", "k")
	cipher, plain := filepath.Join(h.dir, "cipher"), filepath.Join(h.dir, "plain")
	h.cli("format", "fuse", cipher, "--key-id", "k")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })
	h.addVolumes(fmt.Sprintf("\n[[volume]]\nname = \"rel\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n", cipher, plain))

	notify := newNotifySocket(t, t.TempDir())
	cmd := exec.Command(h.bin, "--config", filepath.Base(h.cfg), "run")
	cmd.Dir = filepath.Dir(h.cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	var stderr tstest.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	notify.await(t, "READY=1")
	c := control.NewClient(h.sock)
	defer c.Close()
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v := managed(st); len(v) != 1 || v[0].State != daemon.StateMounted {
		t.Fatalf("volumes %+v, want rel mounted\n%s", v, stderr.String())
	}
}
