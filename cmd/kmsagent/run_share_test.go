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
// the next daemon adopts it with the same worker, and an unmount through
// the control socket ends the worker.
func TestRunDaemonShares(t *testing.T) {
	tstest.NeedRoot(t, "to mount FUSE")
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\n",
		filepath.Join(dir, "kms"), sock, filepath.Join(dir, "state"), filepath.Join(dir, "audit.log")), 0o600)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--config", cfg}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kmsagent %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
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
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(vols)
	f.Close()
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
	notify := newNotifySocket(t, t.TempDir())
	cmd := exec.Command(bin, "--config", cfg, "run")
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
			t.Logf("daemon log:\n%s", stderr.String())
		}
	})
	return cmd, notify
}
