package main

import (
	"bytes"
	"io"
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
	"kmsagent/blockdev/vmtest"
)

// guestDaemon is `kmsagent run` in the guest of TestVMDaemonHotplug.
type guestDaemon struct {
	cmd    *exec.Cmd
	exited chan error
	log    tstest.Buffer
}

func startGuestDaemon(t *testing.T) *guestDaemon {
	t.Helper()
	notify := newNotifySocket(t, t.TempDir())
	g := &guestDaemon{exited: make(chan error, 1)}
	g.cmd = exec.Command(guestKmsagent, "--config", guestConfig, "run")
	g.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	// The log goes to the console with the test's output, which the
	// host shows when the test fails.
	g.cmd.Stderr = io.MultiWriter(os.Stdout, &g.log)
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	notify.await(t, "READY=1")
	return g
}

// TestGuestDaemonHotplug runs in the guest of TestVMDaemonHotplug: the
// daemon starts with its auto volume's disk absent and says so; the
// disk attached by the host gets unlocked and mounted; a kill -9 of the
// daemon leaves the mount serving and the next daemon adopts it; the disk
// detached by the host leaves no mount and no mapping and the status says
// why; an unnamed kmsagent disk is opened as luks-<UUID>; after another
// kill -9, with the first disk attached again meanwhile, the next daemon
// adopts the unnamed volume and mounts the first disk again; the
// unnamed one is closed when its disk goes; the mount stays when the
// daemon stops.
func TestGuestDaemonHotplug(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	ctx := t.Context()
	start := time.Now()
	since := func() string { return time.Since(start).Round(time.Millisecond).String() }
	const bound = 3 * time.Minute // software emulation on a loaded host (45 s seen for one mount), not a wait
	c := control.NewClient(guestSocket)
	defer c.Close()
	volume := func(name string) daemon.VolumeInfo {
		st, err := c.Status(ctx)
		if err != nil {
			t.Logf("status: %v", err)
			return daemon.VolumeInfo{}
		}
		for _, v := range st.Volumes {
			if v.Name == name {
				return v
			}
		}
		return daemon.VolumeInfo{}
	}
	// waitState waits for the volume to reach state; a failure other
	// than its disk being absent (not attached yet, or removed before)
	// ends the test at once.
	waitState := func(name, state string) daemon.VolumeInfo {
		t.Helper()
		var v daemon.VolumeInfo
		tstest.WaitFor(t, bound, name+" "+state, func() bool {
			v = volume(name)
			if v.State == daemon.StateFailed && state != daemon.StateFailed && v.ErrorKind != "device_missing" && v.ErrorKind != "disk_removed" {
				t.Fatalf("waiting for %s %s: %+v", name, state, v)
			}
			return v.State == state
		})
		return v
	}

	first := startGuestDaemon(t)
	v := volume("data")
	vmtest.Data("absent", v.State+" "+v.ErrorKind+": "+v.LastError)
	if v.State != daemon.StateRetrying && v.State != daemon.StateFailed || v.ErrorKind != "device_missing" || !strings.Contains(v.LastError, vmVolumeID[:20]) {
		t.Fatalf("data with its disk absent: %+v", v)
	}

	if err := vmtest.AskHost("attach-data"); err != nil {
		t.Fatal(err)
	}
	attached := time.Now()
	v = waitState("data", daemon.StateMounted)
	vmtest.Data("attach-to-mounted", time.Since(attached).Round(time.Millisecond).String())
	vmtest.Data("mounted", since()+" "+v.Device)
	if b, err := os.ReadFile("/mnt/data/hello"); err != nil || string(b) != "hello from the host\n" {
		t.Fatalf("read the host's file: %q %v", b, err)
	}
	writeSynced(t, "/mnt/data/written-in-vm", "written by the guest\n")

	// kill -9 with the volume mounted: the mount serves on, and the
	// next daemon adopts it.
	first.cmd.Process.Kill()
	<-first.exited
	if b, err := os.ReadFile("/mnt/data/written-in-vm"); err != nil || string(b) != "written by the guest\n" {
		t.Fatalf("after kill -9: %q %v", b, err)
	}
	second := startGuestDaemon(t)
	if v = volume("data"); v.State != daemon.StateMounted || !v.Adopted {
		t.Fatalf("after restart: %+v, want mounted and adopted", v)
	}
	vmtest.Data("adopted", since())

	// The disk goes: the mount is detached lazily, the mapping removed.
	if err := vmtest.AskHost("detach-data"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, bound, "the daemon to close data", func() bool {
		v = volume("data")
		return v.State == daemon.StateFailed && strings.Contains(v.LastError, "disk removed")
	})
	vmtest.Data("removed", since()+" "+v.LastError)
	// Closing it is no error of its own: the status requests meanwhile
	// saw the mount vanish before the daemon had closed the mapping.
	if strings.Contains(second.log.String(), "mounted volume gone") {
		t.Error("the daemon took the mount it detached for one gone behind its back")
	}
	if tstest.Mounted(t, "/mnt/data") {
		t.Error("/mnt/data still mounted after its disk went")
	}
	if _, err := os.Stat("/dev/mapper/data"); err == nil || mapped("data") {
		t.Error("the mapping data is still there after its disk went")
	}

	// An unnamed kmsagent disk: opened as luks-<UUID>, with udev's link.
	b, err := os.ReadFile(guestUnnamed)
	if err != nil {
		t.Fatal(err)
	}
	name := "luks-" + strings.TrimSpace(string(b))
	if err := vmtest.AskHost("attach-unnamed"); err != nil {
		t.Fatal(err)
	}
	v = waitState(name, daemon.StateMounted)
	if !v.Discovered {
		t.Errorf("%s: %+v, want discovered", name, v)
	}
	tstest.WaitFor(t, bound, "udev's /dev/mapper/"+name, func() bool {
		_, err := os.Stat("/dev/mapper/" + name)
		return err == nil
	})
	if sb := readAt(t, "/dev/mapper/"+name, 1024+56, 2); !bytes.Equal(sb, []byte{0x53, 0xef}) {
		t.Errorf("/dev/mapper/%s holds no ext4 superblock (magic %x)", name, sb)
	}
	vmtest.Data("discovered", since())

	// kill -9 again, and the first disk comes back while no daemon
	// runs: the next daemon adopts the open unnamed volume and mounts
	// the first disk at its start, with what was written before it went
	// (the kernel replays the journal the lazy detach left).
	second.cmd.Process.Kill()
	<-second.exited
	if err := vmtest.AskHost("attach-data"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, bound, "udev's by-id link of the data disk", func() bool {
		_, err := os.Stat("/dev/disk/by-id/virtio-" + vmVolumeID[:20])
		return err == nil
	})
	third := startGuestDaemon(t)
	if v = volume(name); v.State != daemon.StateMounted || !v.Adopted || !v.Discovered {
		t.Errorf("%s after the restart: %+v, want adopted", name, v)
	}
	v = waitState("data", daemon.StateMounted)
	if v.Adopted {
		t.Errorf("data mounted again: %+v, want mounted by this daemon", v)
	}
	if b, err := os.ReadFile("/mnt/data/written-in-vm"); err != nil || string(b) != "written by the guest\n" {
		t.Fatalf("after the disk came back: %q %v", b, err)
	}
	vmtest.Data("mounted-again", since())
	// The CLI shows the daemon's table.
	out, err := exec.Command(guestKmsagent, "--config", guestConfig, "status").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^data\s+luks\s+mounted`).Match(out) || !regexp.MustCompile(`(?m)^`+name+`\s+luks\s+mounted`).Match(out) {
		t.Errorf("kmsagent status: %v\n%s", err, out)
	}

	if err := vmtest.AskHost("detach-unnamed"); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, bound, "the daemon to close "+name, func() bool {
		v = volume(name)
		return v.State == daemon.StateFailed && strings.Contains(v.LastError, "disk removed")
	})
	if mapped(name) {
		t.Errorf("the mapping %s is still there after its disk went", name)
	}

	// SIGTERM: the daemon stops, the mount stays (close_on_stop is
	// off).
	third.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-third.exited:
		if err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	case <-time.After(bound):
		t.Fatal("the daemon did not stop on SIGTERM")
	}
	if b, err := os.ReadFile("/mnt/data/hello"); err != nil || string(b) != "hello from the host\n" || !mapped("data") {
		t.Errorf("after the daemon stopped: %q %v, mapped %v; want the mount kept", b, err, mapped("data"))
	}
	vmtest.Data("done", since())
}

// mapped reports whether a device-mapper device called name exists.
func mapped(name string) bool {
	ms, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, m := range ms {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == name {
			return true
		}
	}
	return false
}

func writeSynced(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
