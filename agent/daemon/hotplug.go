package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/config"
	"kmsagent/agent/errkind"
	"kmsagent/agent/source"
	"kmsagent/agent/uevent"
)

// Hot-plug of disks.
//
// The daemon listens to block device events (agent/uevent; udev's group
// where udevd runs, so /dev/disk links exist when an event arrives, the
// kernel's where it does not) and acts on two of them:
//
//   - add, and change when the device carried no volume at its previous
//     event (a loop device or a medium getting its contents; not udev's
//     change after every close-for-write, which would let a failing
//     attempt trigger the next): every [[volume]] whose source names the device
//     (source.Matches: a path, UUID= or evs:) is offered to Attached,
//     which tries the auto ones that are not mounted. With
//     auto_unlock_attached, a device no [[volume]] names that carries a
//     LUKS2 header with a kmsagent token is unlocked as well, as volume
//     "luks-<UUID>" (the name systemd-cryptsetup gives an unnamed LUKS
//     volume). It has no target, so it is opened, not mounted: the
//     daemon cannot know where, nor which file system it holds, and
//     /dev/mapper/luks-<UUID> is there for fstab or a mount unit. The
//     status lists it with discovered set.
//   - remove of a disk or partition that a mounted LUKS2 volume sits on
//     (noted when the volume came up, as the kernel forgets it with the
//     disk): the volume's file system is detached lazily and its mapping
//     removed (Service.Unmount with lazy), and the volume is failed with
//     ErrDiskRemoved until the disk comes back, when add tries it again.
//
// When events were lost (uevent.ErrEventsLost: the socket's buffer
// overflowed) the daemon rescans: volumes whose disks are gone are
// handled as removed, every auto volume not mounted is tried, and with
// auto_unlock_attached every device is probed. The same probe runs once
// at start for disks attached before the daemon.
//
// Shares are not followed: a share's cipher directory is a file system
// path, not a block device.

// ErrDiskRemoved is the last error of a volume whose disk went away.
var ErrDiskRemoved = errkind.New(errkind.DiskRemoved, "disk removed")

// SystemDevices is Devices on the system's /sys and /dev.
type SystemDevices struct {
	*source.Resolver
}

// Under stats node and returns what its device is stacked on.
func (s SystemDevices) Under(node string) ([]source.Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: node, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device", node)
	}
	return s.Below(st.Rdev)
}

// Events is a source of device events; *uevent.Listener is one.
type Events interface {
	Next(ctx context.Context) (uevent.Event, error)
}

// Devices answers the daemon's questions about block devices;
// *source.Resolver is one, tests fake it.
type Devices interface {
	// Matches reports whether the device devName is the one source
	// names.
	Matches(ctx context.Context, source, devName string) (bool, error)
	// KMSVolume returns the UUID of the kmsagent LUKS2 volume on
	// devName, or "".
	KMSVolume(ctx context.Context, devName string) (string, error)
	// Under returns the devices the block device node (a
	// /dev/mapper path) is stacked on.
	Under(node string) ([]source.Device, error)
	// Devices lists every block device.
	Devices() ([]source.Device, error)
}

// discoveredPrefix starts the name of a volume unlocked on attach
// without a [[volume]].
const discoveredPrefix = "luks-"

// Hotplug follows the events until ctx ends or events fails for good
// (the listener closed). It waits for Start to have built the volume
// table; events meanwhile wait in the listener's socket.
func (d *Daemon) Hotplug(ctx context.Context, events Events) error {
	if d.opts.Devices == nil {
		return errors.New("hotplug: no Devices in the daemon's options")
	}
	select {
	case <-d.started:
	case <-ctx.Done():
		return nil
	}
	if d.Config().Agent.AutoUnlockAttached {
		d.discoverAll(ctx)
	}
	// carrying holds the devices that carried a volume at their last
	// event. A change event on one of them is not an attach: udev's
	// watch reports every close after a write, and answering each with
	// a mount attempt of a failed volume (whose attempt may itself
	// write) would loop. A change that makes a device carry a volume (a
	// loop device getting its file) is one.
	carrying := map[string]bool{}
	for {
		ev, err := events.Next(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, uevent.ErrEventsLost):
			d.log.Warn("device events lost; rescanning the block devices")
			d.rescan(ctx)
			continue
		case err != nil:
			return fmt.Errorf("hotplug: %w", err)
		}
		if ev.Subsystem != "block" || ev.DevName == "" {
			continue
		}
		switch ev.Action {
		case uevent.ActionAdd, uevent.ActionChange:
			act := ev.Action == uevent.ActionAdd || !carrying[ev.DevName]
			carrying[ev.DevName] = d.deviceAdded(ctx, ev.DevName, act)
		case uevent.ActionRemove:
			delete(carrying, ev.DevName)
			d.diskRemoved(ctx, ev.Dev(), "/dev/"+ev.DevName)
		}
	}
}

// deviceAdded reports whether devName carries a volume (one a [[volume]]
// names, or with auto_unlock_attached an unnamed kmsagent one) and, when
// act is set, tries it.
func (d *Daemon) deviceAdded(ctx context.Context, devName string, act bool) bool {
	cfg := d.Config()
	matched := map[string]bool{}
	named := false
	for _, vc := range cfg.Volumes {
		if vc.Type != config.VolumeLUKS {
			continue
		}
		ok, seen := matched[vc.Source]
		if !seen {
			var err error
			if ok, err = d.opts.Devices.Matches(ctx, vc.Source, devName); err != nil {
				d.log.Warn("hotplug: cannot tell whether a device is a volume's source", "device", devName, "volume", vc.Name, "error", err)
			}
			matched[vc.Source] = ok
		}
		named = named || ok
	}
	switch {
	case named:
		if !act {
			return true
		}
		if tried := d.Attached(func(src string) bool { return matched[src] }); len(tried) > 0 {
			d.log.Info("disk attached; mounting", "device", devName, "volumes", tried)
		}
		return true
	case cfg.Agent.AutoUnlockAttached:
		return d.discover(ctx, devName, act)
	}
	return false
}

// discover reports whether devName is a kmsagent volume and, when act is
// set, unlocks it.
func (d *Daemon) discover(ctx context.Context, devName string, act bool) bool {
	u, err := d.opts.Devices.KMSVolume(ctx, devName)
	if errors.Is(err, unix.ENXIO) || errors.Is(err, fs.ErrNotExist) {
		// Gone between its event and the probe, as a detached disk is
		// after the change event of its removal; its remove event
		// follows, and there is nothing to warn about.
		d.log.Debug("hotplug: device gone before its header was read", "device", devName, "error", err)
		return false
	}
	if err != nil {
		d.log.Warn("hotplug: cannot read a device's header", "device", devName, "error", err)
		return false
	}
	if u == "" {
		return false
	}
	if !act {
		return true
	}
	if name, ok := d.Discovered(u); ok {
		d.log.Info("kmsagent volume attached; opening it (auto_unlock_attached)", "device", devName, "volume", name)
	}
	return true
}

func (d *Daemon) discoverAll(ctx context.Context) {
	devs, err := d.opts.Devices.Devices()
	if err != nil {
		d.log.Warn("hotplug: cannot list the block devices", "error", err)
		return
	}
	for _, dev := range devs {
		d.discover(ctx, dev.Name, true)
	}
}

// Discovered adds the kmsagent LUKS2 volume with header UUID u, which no
// [[volume]] names, as "luks-<u>" and opens it; a known one not up is
// tried again. It reports the name and whether an attempt was started.
func (d *Daemon) Discovered(u string) (string, bool) {
	name, src := discoveredPrefix+u, "UUID="+u
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return name, false
	}
	for _, v := range d.vols {
		if !v.discovered && (v.cfg.Source == src || v.cfg.Name == name) {
			return name, false // configured: deviceAdded's business
		}
	}
	v := d.vols[name]
	if v == nil {
		v = &volume{cfg: discoveredConfig(u), discovered: true, state: StateUnmounted, since: time.Now()}
		d.vols[name] = v
	}
	if v.state == StateMounted {
		return name, false
	}
	who := self("attach")
	if v.run == nil {
		d.startRun(v, who)
	} else {
		select {
		case v.run.kick <- who:
		default:
		}
	}
	d.notifyStatusLocked()
	return name, true
}

func discoveredConfig(u string) config.Volume {
	return config.Volume{Name: discoveredPrefix + u, Type: config.VolumeLUKS, Source: "UUID=" + u, Auto: true}
}

// diskRemoved closes the mounted volumes that sat on the device dev.
func (d *Daemon) diskRemoved(ctx context.Context, dev uint64, what string) {
	d.mu.Lock()
	var hit []*volume
	for _, name := range sortedKeys(d.vols) {
		v := d.vols[name]
		if v.open() && slices.Contains(v.below, dev) {
			hit = append(hit, v)
		}
	}
	d.mu.Unlock()
	for _, v := range hit {
		d.closeRemoved(ctx, v, what)
	}
}

// closeRemoved detaches v's mount lazily and removes its mapping after
// its disk (what) went away, and fails it with ErrDiskRemoved.
func (d *Daemon) closeRemoved(ctx context.Context, v *volume, what string) {
	d.mu.Lock()
	if !v.open() {
		d.mu.Unlock()
		return
	}
	target := orName(v.cfg)
	name, kind, keyID, provider := v.cfg.Name, Kind(v.cfg.Type), v.mounted.KeyID, v.mounted.Provider
	v.closing = true
	d.mu.Unlock()
	err := d.svc.Unmount(ctx, target, true)
	d.audit(self("detach"), Event{Op: OpUnmount, Volume: name, Kind: kind, KeyID: keyID, Provider: provider, Err: err})
	d.mu.Lock()
	defer d.mu.Unlock()
	v.closing = false
	v.lastErr = fmt.Errorf("volume %s: %w: %s went away; the mount was detached and the mapping removed", name, ErrDiskRemoved, what)
	if err != nil {
		v.lastErr = fmt.Errorf("volume %s: %w: %s went away; closing the volume failed: %v", name, ErrDiskRemoved, what, err)
	}
	v.mounted, v.adopted, v.below = Mounted{}, false, nil
	v.setState(StateFailed)
	d.log.Error("disk of a mounted volume removed", "volume", name, "device", what, "error", v.lastErr)
	d.saveLocked()
	d.notifyStatusLocked()
}

// open reports whether v may still hold a mount or mapping on its disk:
// it is mounted, or Status found it gone (a removed disk leaves the
// mapping detached) before the remove event came. d.mu is held.
func (v *volume) open() bool {
	return v.state == StateMounted || len(v.below) > 0 && v.state == StateFailed && errors.Is(v.lastErr, ErrGone)
}

// rescan makes up for lost events: volumes whose disks are gone are
// closed, and every volume that could be on a new disk is tried.
func (d *Daemon) rescan(ctx context.Context) {
	devs, err := d.opts.Devices.Devices()
	if err != nil {
		d.log.Warn("hotplug: cannot list the block devices", "error", err)
		return
	}
	present := map[uint64]bool{}
	for _, dev := range devs {
		present[dev.Dev] = true
	}
	d.mu.Lock()
	type gone struct {
		v   *volume
		dev uint64
	}
	var lost []gone
	for _, name := range sortedKeys(d.vols) {
		v := d.vols[name]
		for _, b := range v.below {
			if v.open() && !present[b] {
				lost = append(lost, gone{v, b})
				break
			}
		}
	}
	d.mu.Unlock()
	for _, g := range lost {
		d.closeRemoved(ctx, g.v, fmt.Sprintf("block device %d:%d", unix.Major(g.dev), unix.Minor(g.dev)))
	}
	d.Attached(func(string) bool { return true })
	if d.Config().Agent.AutoUnlockAttached {
		for _, dev := range devs {
			d.discover(ctx, dev.Name, true)
		}
	}
}

// noteBelow records the devices a LUKS2 volume that came up sits on, so
// their removal can be told apart later; the kernel forgets the link
// with the disk. d.mu is not held.
func (d *Daemon) noteBelow(m Mounted) []uint64 {
	if d.opts.Devices == nil || m.Device == "" {
		return nil
	}
	below, err := d.opts.Devices.Under(m.Device)
	if err == nil {
		out := make([]uint64, 0, len(below))
		for _, b := range below {
			out = append(out, b.Dev)
		}
		return out
	}
	d.log.Warn("hotplug: the disk under a volume is not known; its removal will not be noticed", "volume", m.Name, "device", m.Device, "error", err)
	return nil
}
