package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
	"kmsagent/agent/tstest"
)

// TestRunDaemonConfined: the daemon as its systemd unit runs it, in a
// mount namespace of its own (unshare --propagation slave stands in for
// ProtectSystem= and the rest), with its workers started through the
// worker socket (a stand-in for systemd's Accept=yes socket, in the
// host's namespace). Its shares are mounted where the host sees them,
// served by workers outside its namespace; status reads them right; an
// unmount and a mount through the daemon reach the host; a worker that
// dies is noticed and its share mounted again; the mounts outlive the
// daemon.
func TestRunDaemonConfined(t *testing.T) {
	h := newDaemonHost(t)
	h.cli("kms", "create-key", "--alias", "good")
	cipher, plain := filepath.Join(h.dir, "data-cipher"), filepath.Join(h.dir, "data")
	h.cli("format", "fuse", cipher, "--key-id", "good")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	h.addVolumes(fmt.Sprintf("\n[[volume]]\nname = \"data\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n", cipher, plain))
	t.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })
	cmd, notify := startConfinable(t, h, true)
	notify.await(t, "READY=1")
	ctx := t.Context()
	c := control.NewClient(h.sock)
	defer c.Close()
	data := func() daemon.VolumeInfo {
		t.Helper()
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range st.Volumes {
			if v.Name == "data" {
				return v
			}
		}
		t.Fatalf("no volume data in %+v", st.Volumes)
		return daemon.VolumeInfo{}
	}
	v := data()
	// The CMK comes from the worker: the daemon never reads the share.
	if v.State != daemon.StateMounted || v.WorkerPID == 0 || v.KeyID == "" {
		t.Fatalf("data: %+v", v)
	}
	// The daemon is in a namespace of its own, its worker in the host's.
	if ns(t, cmd.Process.Pid) == ns(t, os.Getpid()) {
		t.Fatal("the daemon runs in the host's mount namespace: the test proves nothing")
	}
	if ns(t, v.WorkerPID) != ns(t, os.Getpid()) {
		t.Fatal("the share worker runs in the daemon's mount namespace")
	}
	if !tstest.Mounted(t, plain) {
		t.Fatal("the share is not mounted in the host's namespace")
	}
	if err := os.WriteFile(filepath.Join(plain, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	if out := h.cli("umount", "data"); !strings.Contains(out, "unmounted by the daemon") {
		t.Fatalf("umount data: %s", out)
	}
	if !tstest.WaitExit(t, v.WorkerPID, 10*time.Second) {
		t.Fatal("the worker did not exit after the unmount")
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("still mounted on the host after an unmount through the confined daemon")
	}
	h.cli("mount", "data")
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after mount data through the daemon: %q %v", b, err)
	}

	// A worker that dies is seen through the host's mount table and
	// replaced. Its reaper was started through the worker socket too
	// (its own unit under systemd, not a process left in the worker's),
	// and removes the dead mount.
	worker := data().WorkerPID
	reaper := reaperOf(t, worker)
	if ppid := procStatus(t, reaper, "PPid"); ppid == strconv.Itoa(worker) {
		t.Fatalf("the reaper %d is the worker's child", reaper)
	}
	syscall.Kill(worker, syscall.SIGKILL)
	tstest.WaitFor(t, 60*time.Second, "the daemon to mount data again", func() bool {
		v := data()
		return v.State == daemon.StateMounted && v.WorkerPID != 0 && v.WorkerPID != worker
	})
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after the daemon mounted data again: %q %v", b, err)
	}

	// The daemon stops; the share stays mounted for the next one.
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if b, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("after the daemon stopped: %q %v", b, err)
	}
	h.cli("umount", plain)
}

// startConfinable starts the daemon of h directly or, with confined, as
// its systemd unit runs it: in a mount namespace of its own, workers
// started through a worker socket served in the host's namespace.
func startConfinable(t *testing.T, h *daemonHost, confined bool) (*exec.Cmd, *notifySocket) {
	t.Helper()
	if !confined {
		return startDaemon(t, h.bin, h.cfg)
	}
	unshare := tstest.NeedTool(t, "unshare", "util-linux")
	workerSock := filepath.Join(h.dir, "worker.sock")
	tstest.WorkerSocket(t, workerSock, nil, h.bin, "worker-exec")
	return startNotifying(t, "daemon", unshare, "--mount", "--propagation", "slave", "--",
		h.bin, "--config", h.cfg, "run", "--worker-socket", workerSock)
}

// ns is the mount namespace of process pid.
func ns(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
