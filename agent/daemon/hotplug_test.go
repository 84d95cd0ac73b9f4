package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"golang.org/x/sys/unix"

	"kmsagent/agent/config"
	"kmsagent/agent/source"
	"kmsagent/agent/uevent"
)

// fakeEvents delivers what the test sends: a uevent.Event or an error.
type fakeEvents chan any

func (f fakeEvents) Next(ctx context.Context) (uevent.Event, error) {
	select {
	case x := <-f:
		if err, ok := x.(error); ok {
			return uevent.Event{}, err
		}
		return x.(uevent.Event), nil
	case <-ctx.Done():
		return uevent.Event{}, ctx.Err()
	}
}

func blockEvent(action uevent.Action, dev fakeDisk) uevent.Event {
	return uevent.Event{Action: action, Subsystem: "block", DevName: dev.name, DevType: "disk", Major: unix.Major(dev.dev), Minor: unix.Minor(dev.dev)}
}

// fakeDisk is a block device of fakeDevices.
type fakeDisk struct {
	name    string
	dev     uint64
	sources []string // the sources it matches
	kms     string   // UUID of its kmsagent LUKS2 header
}

// fakeDevices is the block devices present; mapped[node] is what a
// /dev/mapper node sits on.
type fakeDevices struct {
	mu     sync.Mutex
	disks  map[string]fakeDisk
	mapped map[string]string
}

func (f *fakeDevices) plug(d fakeDisk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disks[d.name] = d
}

func (f *fakeDevices) unplug(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.disks, name)
}

func (f *fakeDevices) Matches(_ context.Context, src, devName string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.disks[devName].sources, src), nil
}

func (f *fakeDevices) KMSVolume(_ context.Context, devName string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disks[devName].kms, nil
}

func (f *fakeDevices) Under(node string) ([]source.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.disks[f.mapped[node]]
	if !ok {
		return nil, fmt.Errorf("%s: not a mapping", node)
	}
	return []source.Device{{Name: d.name, Dev: d.dev}}, nil
}

func (f *fakeDevices) Devices() ([]source.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []source.Device
	for _, d := range f.disks {
		out = append(out, source.Device{Name: d.name, Dev: d.dev})
	}
	return out, nil
}

const (
	uuidData  = "11111111-2222-4333-8444-555555555555"
	uuidStray = "99999999-8888-4777-8666-555555555555"
)

// TestHotplug: a disk that carries a configured volume mounts it when
// attached; with auto_unlock_attached a kmsagent disk no [[volume]] names
// is opened as luks-<UUID> (at start when already there, and when
// attached); removing the disk under a mounted volume detaches it lazily
// and fails it with "disk removed" until it comes back; lost events
// rescan.
func TestHotplug(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vdb := fakeDisk{name: "vdb", dev: unix.Mkdev(252, 16), sources: []string{"UUID=" + uuidData}}
		vdc := fakeDisk{name: "vdc", dev: unix.Mkdev(252, 32), kms: uuidStray}
		vdd := fakeDisk{name: "vdd", dev: unix.Mkdev(252, 48)}
		devs := &fakeDevices{disks: map[string]fakeDisk{"vdc": vdc}, mapped: map[string]string{
			"/dev/mapper/data": "vdb", "/dev/mapper/luks-" + uuidStray: "vdc"}}
		svc := newFake()
		svc.results["data"] = []error{errors.New("UUID=" + uuidData + ": no device found")}
		cfg := cfgWith(config.Volume{Name: "data", Type: "luks", Source: "UUID=" + uuidData, Target: "/mnt/data", Auto: true})
		cfg.Agent.AutoUnlockAttached = true
		audit := &fakeAudit{}
		d := New(cfg, Options{Service: svc, Devices: devs, Audit: audit, Backoff: fixedBackoff})
		stop := started(t, d)
		defer stop()
		ctx, cancel := context.WithCancel(t.Context())
		events := make(fakeEvents)
		hotplugDone := make(chan error, 1)
		go func() { hotplugDone <- d.Hotplug(ctx, events) }()
		synctest.Wait()

		stray := discoveredPrefix + uuidStray
		if s := stateOf(t, d, stray); s.State != StateMounted || !s.Discovered || s.Managed || s.Device != "/dev/mapper/"+stray || s.Target != "" {
			t.Errorf("%s, attached before the start: %+v", stray, s)
		}
		if s := stateOf(t, d, "data"); s.State != StateFailed {
			t.Fatalf("data without its disk: %+v", s)
		}

		send := func(x any) {
			t.Helper()
			events <- x
			synctest.Wait()
		}
		devs.plug(vdb)
		send(blockEvent(uevent.ActionAdd, vdb))
		if s := stateOf(t, d, "data"); s.State != StateMounted {
			t.Errorf("data after its disk came: %+v", s)
		}
		devs.plug(vdd)
		send(blockEvent(uevent.ActionAdd, vdd))
		if svc.ncalls("data") != 2 || len(svc.calls) != 2 {
			t.Errorf("a disk that is no volume's was mounted: %v", svc.calls)
		}

		devs.unplug("vdb")
		send(blockEvent(uevent.ActionRemove, vdb))
		s := stateOf(t, d, "data")
		if s.State != StateFailed || s.ErrorKind != "disk_removed" || !strings.Contains(s.LastError, "disk removed: /dev/vdb went away") {
			t.Errorf("data after its disk went: %+v", s)
		}
		if got := svc.unmounted(); !slices.Equal(got, []string{"/mnt/data"}) || !svc.lazy[0] {
			t.Errorf("unmounts %q lazy %v, want /mnt/data lazily", got, svc.lazy)
		}
		if e := audit.events[len(audit.events)-1]; e.Op != OpUnmount || e.Volume != "data" || e.Actor != "detach" || e.KeyID != "cmk-1" {
			t.Errorf("audit of the detach: %+v", e)
		}

		devs.plug(vdb)
		send(blockEvent(uevent.ActionAdd, vdb))
		if s := stateOf(t, d, "data"); s.State != StateMounted {
			t.Errorf("data after its disk came back: %+v", s)
		}

		// The status sees the mapping detached before the remove event
		// arrives: the event still closes it.
		devs.unplug("vdb")
		svc.mu.Lock()
		svc.detached["data"] = true
		svc.mu.Unlock()
		if s := stateOf(t, d, "data"); s.ErrorKind != "gone" {
			t.Errorf("data detached: %+v", s)
		}
		send(blockEvent(uevent.ActionRemove, vdb))
		if s := stateOf(t, d, "data"); s.ErrorKind != "disk_removed" || len(svc.unmounted()) != 2 {
			t.Errorf("data detached, then its remove event: %+v, unmounts %q", s, svc.unmounted())
		}
		svc.mu.Lock()
		svc.detached["data"] = false
		svc.mu.Unlock()
		devs.plug(vdb)
		send(blockEvent(uevent.ActionAdd, vdb))

		// vdc goes while events are lost: the rescan notices.
		devs.unplug("vdc")
		send(uevent.ErrEventsLost)
		if s := stateOf(t, d, stray); s.State != StateFailed || s.ErrorKind != "disk_removed" {
			t.Errorf("%s after a rescan without its disk: %+v", stray, s)
		}
		if s := stateOf(t, d, "data"); s.State != StateMounted {
			t.Errorf("data after the rescan: %+v", s)
		}
		cancel()
		if err := <-hotplugDone; err != nil {
			t.Errorf("hotplug: %v", err)
		}
	})
}

// TestHotplugOff: without auto_unlock_attached an unconfigured kmsagent
// disk is left alone.
func TestHotplugOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vdc := fakeDisk{name: "vdc", dev: unix.Mkdev(252, 32), kms: uuidStray}
		devs := &fakeDevices{disks: map[string]fakeDisk{"vdc": vdc}}
		svc := newFake()
		d := New(cfgWith(), Options{Service: svc, Devices: devs})
		stop := started(t, d)
		defer stop()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		events := make(fakeEvents)
		go d.Hotplug(ctx, events)
		events <- blockEvent(uevent.ActionAdd, vdc)
		synctest.Wait()
		if len(svc.calls) != 0 {
			t.Errorf("mounted %v", svc.calls)
		}
	})
}

// TestDiscoveredKept: a volume opened on attach stays in the table across
// a reload (it is not the configuration's) and a restart (the state file
// remembers it while the kernel still has it open), and one the kernel
// no longer has is forgotten.
func TestDiscoveredKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir() + "/state"
		sf := openStateFile(t, dir)
		vdc := fakeDisk{name: "vdc", dev: unix.Mkdev(252, 32), kms: uuidStray}
		devs := &fakeDevices{disks: map[string]fakeDisk{"vdc": vdc}, mapped: map[string]string{"/dev/mapper/luks-" + uuidStray: "vdc"}}
		cfg := cfgWith()
		cfg.Agent.AutoUnlockAttached = true
		svc := newFake()
		d := New(cfg, Options{Service: svc, Devices: devs, State: sf, Load: func() (*config.Config, error) { return cfg, nil }})
		stop := started(t, d)
		ctx, cancel := context.WithCancel(t.Context())
		go d.Hotplug(ctx, make(fakeEvents))
		synctest.Wait()
		stray := discoveredPrefix + uuidStray
		if _, err := d.Reload(t.Context(), "test"); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, d, stray); s.State != StateMounted || !s.Discovered {
			t.Errorf("%s after a reload: %+v", stray, s)
		}
		cancel()
		stop()
		sf.Close()

		for _, open := range []bool{true, false} {
			svc2 := newFake()
			if open {
				svc2.external = []VolumeStatus{{Name: stray, Kind: KindLUKS, Source: "/dev/vdc", State: ServiceMounted, Device: "/dev/mapper/" + stray}}
			}
			sf := openStateFile(t, dir)
			d2 := New(cfgWith(), Options{Service: svc2, Devices: devs, State: sf})
			stop := started(t, d2)
			sts, err := d2.Status(t.Context())
			switch {
			case err != nil:
				t.Fatal(err)
			case open && (len(sts) != 1 || !sts[0].Discovered || !sts[0].Adopted || sts[0].KeyID != "cmk-1"):
				t.Errorf("restart with %s open: %+v", stray, sts)
			case !open && len(sts) != 0:
				t.Errorf("restart with %s closed: %+v", stray, sts)
			}
			stop()
			sf.Close()
		}
	})
}

// TestHotplugChange: a change event on a disk that already carried the
// volume (udev's watch after a write, a resize) does not try a failed
// volume again, so a failing attempt cannot feed itself; a change that
// makes the disk carry it (a loop device getting its file) does.
func TestHotplugChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vdb := fakeDisk{name: "vdb", dev: unix.Mkdev(252, 16), sources: []string{"UUID=" + uuidData}}
		devs := &fakeDevices{disks: map[string]fakeDisk{}, mapped: map[string]string{}}
		svc := newFake()
		svc.results["data"] = []error{source.ErrNotFound, errDisabled, errDisabled}
		d := New(cfgWith(config.Volume{Name: "data", Type: "luks", Source: "UUID=" + uuidData, Auto: true}), Options{Service: svc, Devices: devs})
		stop := started(t, d)
		defer stop()
		// The disk not attached yet is a kind of its own in the status.
		if s := stateOf(t, d, "data"); s.State != StateFailed || s.ErrorKind != "device_missing" {
			t.Errorf("data before its disk came: %s, error kind %q; want failed, device_missing", s.State, s.ErrorKind)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		events := make(fakeEvents)
		go d.Hotplug(ctx, events)
		send := func(ev uevent.Event) {
			events <- ev
			synctest.Wait()
		}
		devs.plug(vdb)
		send(blockEvent(uevent.ActionAdd, vdb)) // attempt 2: key disabled
		send(blockEvent(uevent.ActionChange, vdb))
		send(blockEvent(uevent.ActionChange, vdb))
		if n := svc.ncalls("data"); n != 2 {
			t.Errorf("%d attempts after an add and two changes of a disk that carried the volume, want 2", n)
		}
		empty := fakeDisk{name: "vdb", dev: vdb.dev}
		devs.plug(empty)
		send(blockEvent(uevent.ActionChange, empty))
		devs.plug(vdb)
		send(blockEvent(uevent.ActionChange, vdb))
		if n := svc.ncalls("data"); n != 3 {
			t.Errorf("%d attempts after the disk got the volume again, want 3", n)
		}
	})
}

// goneDevices is fakeDevices whose disk vanished before the probe of its
// header: the open fails as it does for a removed virtio disk.
type goneDevices struct{ *fakeDevices }

func (goneDevices) KMSVolume(_ context.Context, devName string) (string, error) {
	return "", &fs.PathError{Op: "open", Path: "/dev/" + devName, Err: unix.ENXIO}
}

// TestHotplugGoneBeforeProbe: with auto_unlock_attached, the change
// event that comes with a disk's removal finds the device gone; that is
// no warning, as it was on every detach.
func TestHotplugGoneBeforeProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs strings.Builder
		devs := goneDevices{&fakeDevices{disks: map[string]fakeDisk{}, mapped: map[string]string{}}}
		cfg := cfgWith()
		cfg.Agent.AutoUnlockAttached = true
		d := New(cfg, Options{Service: newFake(), Devices: devs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		stop := started(t, d)
		defer stop()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		events := make(fakeEvents)
		go d.Hotplug(ctx, events)
		events <- blockEvent(uevent.ActionChange, fakeDisk{name: "vdb", dev: unix.Mkdev(252, 16)})
		synctest.Wait()
		if strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("a warning for a device gone before its probe:\n%s", logs.String())
		}
	})
}

// TestStatusWhileClosing: a status request while the daemon closes a
// volume whose disk went (the mount already detached, the mapping's
// removal still running) or that it was asked to unmount does not take
// the missing mount for one gone behind its back: no "gone" error, no
// error logged, and the closer's outcome is what the status says after.
func TestStatusWhileClosing(t *testing.T) {
	for _, how := range []string{"disk removed", "unmount"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				vdb := fakeDisk{name: "vdb", dev: unix.Mkdev(252, 16), sources: []string{"UUID=" + uuidData}}
				devs := &fakeDevices{disks: map[string]fakeDisk{"vdb": vdb}, mapped: map[string]string{"/dev/mapper/data": "vdb"}}
				svc := newFake()
				var logs strings.Builder
				cfg := cfgWith(config.Volume{Name: "data", Type: "luks", Source: "UUID=" + uuidData, Target: "/mnt/data", Auto: true})
				d := New(cfg, Options{Service: svc, Devices: devs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				stop := started(t, d)
				defer stop()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				events := make(fakeEvents)
				go d.Hotplug(ctx, events)
				if s := stateOf(t, d, "data"); s.State != StateMounted {
					t.Fatalf("data: %+v", s)
				}
				gate := make(chan struct{})
				svc.mu.Lock()
				svc.unmountGate = gate
				svc.mu.Unlock()
				unmounted := make(chan error, 1)
				if how == "unmount" {
					go func() { unmounted <- d.Unmount(ctx, "data", false, "uid=0") }()
				} else {
					devs.unplug("vdb")
					events <- blockEvent(uevent.ActionRemove, vdb)
					unmounted <- nil
				}
				synctest.Wait()
				if s := stateOf(t, d, "data"); s.State != StateMounted || s.ErrorKind != "" {
					t.Errorf("data while being closed: %+v, want still mounted", s)
				}
				close(gate)
				if err := <-unmounted; err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				want := StateUnmounted
				if how == "disk removed" {
					want = StateFailed
				}
				if s := stateOf(t, d, "data"); s.State != want || s.ErrorKind == "gone" {
					t.Errorf("data after it was closed: %+v, want %s", s, want)
				}
				if strings.Contains(logs.String(), "mounted volume gone") {
					t.Errorf("a volume the daemon closed was logged as gone:\n%s", logs.String())
				}
			})
		})
	}
}
