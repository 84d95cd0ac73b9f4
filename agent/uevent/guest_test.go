package uevent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/blockdev/vmtest"
)

// TestGuestUdevHotplug runs in the VM of TestVMUdev, with udevd running:
// it unplugs vdb's PCI function, plugs it back with a bus rescan, and
// checks udevd's events.
func TestGuestUdevHotplug(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	if g := DetectGroup(UdevControl); g != UdevGroup {
		t.Fatalf("DetectGroup with udevd running = %v", g)
	}
	link := "/dev/disk/by-id/virtio-" + guestSerial
	if _, err := os.Lstat(link); err != nil {
		t.Fatalf("udevd made no link for the serial disk: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var drops []error
	l, err := Listen(Options{
		Group:     UdevGroup,
		Subsystem: "block",
		Actions:   []Action{ActionAdd, ActionRemove},
		OnDrop:    func(err error) { drops = append(drops, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	next := func(action Action) Event {
		t.Helper()
		for {
			ev, err := l.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", action, err)
			}
			if ev.Action == action && ev.DevType == "disk" {
				return ev
			}
		}
	}
	virtio, err := filepath.EvalSymlinks("/sys/class/block/vdb/device")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(virtio), "remove"), []byte("1"), 0); err != nil {
		t.Fatalf("unplug: %v", err)
	}
	rm := next(ActionRemove)
	if !rm.FromUdev || rm.DevName != "vdb" || rm.Env["DEVNAME"] != "/dev/vdb" {
		t.Errorf("remove event %+v", rm)
	}
	if err := os.WriteFile("/sys/bus/pci/rescan", []byte("1"), 0); err != nil {
		t.Fatalf("rescan: %v", err)
	}
	add := next(ActionAdd)
	// udevd sends its event after the rules ran: the link is there now.
	target, err := filepath.EvalSymlinks(link)
	if err != nil || target != "/dev/"+add.DevName {
		t.Errorf("when the add event arrived, %s -> %q, %v; want /dev/%s", link, target, err, add.DevName)
	}
	if !add.FromUdev || add.Env["ID_SERIAL"] != guestSerial || add.Major == 0 || add.Seqnum <= rm.Seqnum {
		t.Errorf("add event %+v", add)
	}
	if len(drops) > 0 {
		t.Errorf("udevd's own messages were dropped: %v", drops)
	}
	vmtest.Data("udev-add", add.DevName+" DEVLINKS="+add.Env["DEVLINKS"])
}
