package dm_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/vmtest"
)

// TestGuestUdevStuck runs in the VM of TestVMUdevStuck; elsewhere it
// skips.
func TestGuestUdevStuck(t *testing.T) {
	vmtest.RequireGuest(t)
	const timeout = time.Second
	c, err := dm.OpenWith(dm.Options{UdevTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Udev() != dm.UdevSync {
		t.Skipf("device-mapper sees %v", c.Udev())
	}
	vmtest.Report(t)
	const name = "stuck"
	spec := dm.Spec{Name: name, Targets: []dm.Target{{Start: 0, Length: deviceSectors(t, "/dev/vda"), Type: "linear", Params: "/dev/vda 0"}}}
	start := time.Now()
	_, err = c.Activate(t.Context(), spec)
	took := time.Since(start)
	if !errors.Is(err, dm.ErrUdevWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Activate with a stuck udev: %v, want ErrUdevWait and DeadlineExceeded", err)
	}
	if strings.Contains(err.Error(), "cleanup failed") {
		t.Errorf("the device was removed, but the error says otherwise: %v", err)
	}
	// One wait for the resume and one for the removal that undoes it.
	if took < timeout || took > 4*timeout+5*time.Second {
		t.Errorf("Activate took %v with a udev timeout of %v", took, timeout)
	}
	vmtest.Data("udev-stuck", err.Error())
	if _, ok := listed(t, c, name); ok {
		t.Error("the device is left")
	}
	if _, err := os.Lstat("/dev/mapper/" + name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/dev/mapper/%s is left (%v)", name, err)
	}
	if left, err := vmtest.DMCookies(); err != nil || len(left) > 0 {
		t.Errorf("udev cookie semaphores left: %q %v", left, err)
	}

	// Cancelling the context ends the wait the same way, and the device
	// still goes.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(timeout/4, cancel)
	_, err = c.Activate(ctx, spec)
	if !errors.Is(err, dm.ErrUdevWait) || !errors.Is(err, context.Canceled) {
		t.Errorf("Activate with a cancelled context: %v, want ErrUdevWait and Canceled", err)
	}
	if _, ok := listed(t, c, name); ok {
		t.Error("the device is left after the cancelled Activate")
	}
	if left, err := vmtest.DMCookies(); err != nil || len(left) > 0 {
		t.Errorf("udev cookie semaphores left: %q %v", left, err)
	}
}
