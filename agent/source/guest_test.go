package source

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/agent/uevent"
	"kmsagent/blockdev/vmtest"
)

// TestGuestVirtio runs in the VM of TestVMVirtioSerial: vda is volume
// volA with a LUKS2 header of uuidA, vdb is volume volB and empty.
func TestGuestVirtio(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	ctx := context.Background()
	if b, err := os.ReadFile("/sys/class/block/vda/serial"); err == nil {
		vmtest.Data("vda-serial", string(b))
	}
	if _, err := os.Stat("/dev/disk"); err == nil {
		t.Error("/dev/disk exists: this test is meant for a system without udev")
	}
	for _, tt := range []struct{ spec, want string }{
		{"evs:" + volA, "/dev/vda"},
		{"evs:" + volB, "/dev/vdb"},
		{"UUID=" + uuidA, "/dev/vda"},
	} {
		if got, err := Resolve(ctx, tt.spec); err != nil || got != tt.want {
			t.Errorf("Resolve(%s) = %q, %v; want %s", tt.spec, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		spec, dev string
		want      bool
	}{
		{"evs:" + volA, "vda", true},
		{"evs:" + volA, "vdb", false},
		{"UUID=" + uuidA, "vda", true},
		{"UUID=" + uuidA, "vdb", false},
		{"/dev/vdb", "vdb", true},
	} {
		if got, err := Matches(ctx, tt.spec, tt.dev); err != nil || got != tt.want {
			t.Errorf("Matches(%s, %s) = %v, %v; want %v", tt.spec, tt.dev, got, err, tt.want)
		}
	}
}

// TestGuestHotplug unplugs vdb's PCI device and plugs it back by a bus
// rescan, which the kernel handles as a real hot-plug, and follows the
// daemon's path without udev: the kernel's remove and add events, then
// Matches and Resolve for the disk that came back.
func TestGuestHotplug(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := uevent.Listen(uevent.Options{
		Group:     uevent.DetectGroup(uevent.UdevControl),
		Subsystem: "block",
		Actions:   []uevent.Action{uevent.ActionAdd, uevent.ActionRemove},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// /sys/class/block/vdb/device is the virtio device; its parent is
	// the PCI function.
	virtio, err := filepath.EvalSymlinks("/sys/class/block/vdb/device")
	if err != nil {
		t.Fatal(err)
	}
	pci := filepath.Dir(virtio)
	if err := os.WriteFile(filepath.Join(pci, "remove"), []byte("1"), 0); err != nil {
		t.Fatalf("unplug %s: %v", pci, err)
	}
	next := func(action uevent.Action) uevent.Event {
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
	if ev := next(uevent.ActionRemove); ev.DevName != "vdb" {
		t.Fatalf("removed %s, want vdb", ev.DevName)
	}
	if ok, err := Matches(ctx, "evs:"+volB, "vdb"); ok || err != nil {
		t.Errorf("Matches for the unplugged disk = %v, %v", ok, err)
	}
	if err := os.WriteFile("/sys/bus/pci/rescan", []byte("1"), 0); err != nil {
		t.Fatalf("rescan: %v", err)
	}
	add := next(uevent.ActionAdd)
	ok, err := Matches(ctx, "evs:"+volB, add.DevName)
	if !ok || err != nil {
		t.Fatalf("Matches(evs:%s, %s) = %v, %v", volB, add.DevName, ok, err)
	}
	if ok, _ := Matches(ctx, "evs:"+volA, add.DevName); ok {
		t.Errorf("the plugged disk %s also matches %s", add.DevName, volA)
	}
	if got, err := Resolve(ctx, "evs:"+volB); err != nil || got != "/dev/"+add.DevName {
		t.Errorf("Resolve after the plug = %q, %v; want /dev/%s", got, err, add.DevName)
	}
	vmtest.Data("hotplug-add", add.DevName+" "+add.Env["SEQNUM"])
}
