package crypt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
	"kmsagent/agent/safepath"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/volume"
)

// Options configure Open.
type Options struct {
	// Name is the device-mapper name; DefaultName of the volume when
	// empty.
	Name string
	// Mountpoint, when set, is where the file system is mounted.
	Mountpoint string
	// FSType is the file system type; detected from the superblock when
	// empty.
	FSType string
	// MountOptions are mount(8)-style -o options.
	MountOptions string
	// ReadOnly maps (and mounts) the volume read-only.
	ReadOnly bool
	// AllowDiscards passes discards down to the backing device, which
	// shows which blocks are free.
	AllowDiscards bool
	// Progress, when set, is called at the start of each step.
	Progress func(step string)
}

// Unlocker performs Activate for a request: in this process, or in a
// worker process so the key never enters this one. It must leave no
// mapping behind when it fails; Open still removes one that a dead
// worker left.
type Unlocker func(ctx context.Context, req UnlockRequest) error

// Volume is an open volume.
type Volume struct {
	Name       string // device-mapper name
	Device     string // /dev/mapper/<name>
	LUKSUUID   string
	Loop       string // the loop device attached for an image file
	Mountpoint string
	FSType     string
}

// ErrAlreadyOpen is returned for a volume that is open already.
var ErrAlreadyOpen = errors.New("volume is already open")

// DefaultName is the device-mapper name of a volume opened without one:
// "kmsagent-" and the first 8 hex digits of its LUKS uuid. It is stable
// across boots and hosts, and short enough to leave room in the
// device-mapper uuid.
func DefaultName(luksUUID string) string {
	u := strings.ReplaceAll(luksUUID, "-", "")
	if len(u) > 8 {
		u = u[:8]
	}
	return "kmsagent-" + strings.ToLower(u)
}

// Open opens the kmsagent LUKS2 volume on source (a block device or an
// image file) as /dev/mapper/<name> and mounts it when o.Mountpoint is
// set. On failure nothing it made is left: no mapping, no loop device,
// no mount; the error is a *StepError naming the step.
func Open(ctx context.Context, ctl *dm.Control, source string, o Options, unlock Unlocker) (*Volume, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if o.Name != "" {
		if err := dm.ValidateName(o.Name); err != nil {
			return nil, err
		}
	}
	flags, data, err := ParseMountOptions(o.MountOptions, o.ReadOnly)
	if err != nil {
		return nil, err
	}
	var mp *safepath.Mountpoint
	if o.Mountpoint != "" {
		// Opened now, without following symlinks, and mounted on
		// through this descriptor: the path is not looked up again.
		mp, err = safepath.OpenMountpoint(o.Mountpoint)
		if err != nil {
			return nil, err
		}
		defer mp.Close()
	}
	fi, err := os.Stat(source)
	if err != nil {
		return nil, err
	}
	v := &Volume{}
	devPath := source
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		progress(StepLoop)
		l, err := Attach(source, o.ReadOnly)
		if err != nil {
			return nil, stepErr(StepLoop, err)
		}
		// Held until the mapping holds it (or Open fails); autoclear
		// then detaches it whenever the mapping goes.
		defer l.Release()
		devPath, v.Loop = l.Path, l.Path
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
	default:
		return nil, fmt.Errorf("%s is neither a block device nor a regular file", source)
	}

	progress(StepHeader)
	dev, err := volume.OpenDevice(devPath, false)
	if err != nil {
		return nil, stepErr(StepHeader, err)
	}
	h, err := volume.ReadHeader(dev)
	dev.Close()
	if err != nil {
		return nil, stepErr(StepHeader, err)
	}
	v.LUKSUUID = h.UUID()
	v.Name = o.Name
	if v.Name == "" {
		v.Name = DefaultName(v.LUKSUUID)
	}
	uuid, err := dm.CryptUUID(v.LUKSUUID, v.Name)
	if err != nil {
		return nil, stepErr(StepHeader, err)
	}

	progress(StepCheck)
	lock, err := lockVolume(v.LUKSUUID)
	if err != nil {
		return nil, stepErr(StepCheck, err)
	}
	defer lock.Close()
	if err := checkNotOpen(ctl, v.LUKSUUID, v.Name); err != nil {
		return nil, stepErr(StepCheck, err)
	}

	progress(StepWorker)
	err = unlock(ctx, UnlockRequest{Device: devPath, Name: v.Name, ReadOnly: o.ReadOnly, AllowDiscards: o.AllowDiscards})
	if err != nil {
		err = stepErr(StepUnlock, err)
		if cerr := removeLeftover(context.WithoutCancel(ctx), ctl, v.Name, uuid); cerr != nil {
			err = fmt.Errorf("%w (and removing the half-made mapping failed: %v)", err, cerr)
		}
		return nil, err
	}
	info, err := ctl.Status(v.Name)
	if err == nil && info.UUID != uuid {
		err = fmt.Errorf("mapping %s has uuid %q, want %q", v.Name, info.UUID, uuid)
	}
	if err != nil {
		return nil, stepErr(StepActivate, err)
	}
	v.Device = filepath.Join(ctl.NodeDir(), v.Name)
	if o.Mountpoint == "" {
		return v, nil
	}

	progress(StepMount)
	if err := mount(v, mp, o.FSType, flags, data); err != nil {
		if _, derr := ctl.Deactivate(context.WithoutCancel(ctx), v.Name, dm.RemoveOptions{}); derr != nil {
			err = fmt.Errorf("%w (and closing the mapping failed: %v)", err, derr)
		}
		return nil, stepErr(StepMount, err)
	}
	return v, nil
}

func mount(v *Volume, mp *safepath.Mountpoint, fstype string, flags uintptr, data string) error {
	if fstype == "" {
		f, err := os.Open(v.Device)
		if err != nil {
			return err
		}
		fstype, err = DetectFS(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("detect the file system on %s: %w", v.Device, err)
		}
		if fstype == "" {
			return &UnknownFSError{Device: v.Device}
		}
	}
	if err := mp.Mount(v.Device, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", v.Device, fstype, mp.Path, err)
	}
	v.Mountpoint, v.FSType = mp.Path, fstype
	return nil
}

// checkNotOpen refuses a volume that has a mapping already, and a name
// that is taken.
func checkNotOpen(ctl *dm.Control, luksUUID, name string) error {
	devs, err := ctl.List()
	if err != nil {
		return err
	}
	probe, err := dm.CryptUUID(luksUUID, "x")
	if err != nil {
		return err
	}
	prefix := strings.TrimSuffix(probe, "x")
	for _, d := range devs {
		if len(d.UUID) >= len(prefix) && strings.EqualFold(d.UUID[:len(prefix)], prefix) {
			return &AlreadyOpenError{Name: d.Name}
		}
		if d.Name == name {
			return &NameTakenError{Name: name, UUID: d.UUID}
		}
	}
	return nil
}

// removeLeftover removes the mapping name if it carries the uuid Open
// gave it: what a worker that died half way left behind.
func removeLeftover(ctx context.Context, ctl *dm.Control, name, uuid string) error {
	info, err := ctl.Status(name)
	if errors.Is(err, unix.ENXIO) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.UUID != uuid {
		return nil // somebody else's device that took the name
	}
	_, err = ctl.Deactivate(ctx, name, dm.RemoveOptions{})
	return err
}

// CloseOptions configure Close.
type CloseOptions struct {
	// Lazy detaches busy mounts (MNT_DETACH); the mapping is then removed
	// on last close.
	Lazy bool
}

// CloseResult says what Close did.
type CloseResult struct {
	Unmounted []string
	// Deferred is set when the mapping was still busy and is only marked
	// for removal on last close.
	Deferred bool
	// Loop is the loop device under the mapping, if any, and
	// LoopDetached whether it is gone.
	Loop         string
	LoopDetached bool
}

// Close unmounts the file systems mounted from mapping name, wipes its
// key and removes it (deferred when it stays busy), and waits for the
// loop device under it to detach. It refuses mappings that are not
// kmsagent's.
func Close(ctx context.Context, ctl *dm.Control, name string, o CloseOptions) (CloseResult, error) {
	var res CloseResult
	if err := dm.ValidateName(name); err != nil {
		return res, err
	}
	info, err := ctl.Status(name)
	if err != nil {
		return res, err
	}
	tab, err := ctl.Table(name)
	if err != nil {
		return res, err
	}
	p, err := ourTable(name, tab)
	if err != nil {
		return res, err
	}
	mps, err := mountsOf(info.Dev)
	if err != nil {
		return res, fmt.Errorf("list mounts: %w", err)
	}
	var uflags int
	if o.Lazy {
		uflags = unix.MNT_DETACH
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], uflags); err != nil {
			return res, &UnmountError{Mountpoint: mps[i], Err: err}
		}
		res.Unmounted = append(res.Unmounted, mps[i])
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	rr, err := ctl.Deactivate(ctx, name, dm.RemoveOptions{})
	if errors.Is(err, unix.EBUSY) {
		rr, err = ctl.Deactivate(ctx, name, dm.RemoveOptions{Deferred: true})
	}
	if err != nil {
		return res, err
	}
	res.Deferred = rr.Deferred
	if backing, ok := parseDevNum(p.Device); ok && unix.Major(backing) == loopMajor {
		res.Loop = fmt.Sprintf("/dev/loop%d", unix.Minor(backing))
		if !res.Deferred && loopAutoclear(backing) {
			res.LoopDetached = waitLoopDetached(backing, 5*time.Second)
		}
	}
	return res, nil
}

// parseDevNum parses "major:minor".
func parseDevNum(s string) (uint64, bool) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), true
}

// Resolve finds the mapping for target: a mount point of a mapping, or a
// mapping's name. ok is false when target is neither.
func Resolve(ctl *dm.Control, target string) (name string, ok bool, err error) {
	if abs, err := filepath.Abs(target); err == nil {
		ms, err := mountinfo.Read()
		if err != nil {
			return "", false, err
		}
		for _, m := range ms {
			if m.Mountpoint != abs {
				continue
			}
			devs, err := ctl.List()
			if err != nil {
				return "", false, err
			}
			for _, d := range devs {
				if d.Dev == m.Dev || (unix.Major(d.Dev) == unix.Major(m.Dev) && unix.Minor(d.Dev) == unix.Minor(m.Dev)) {
					return d.Name, true, nil
				}
			}
		}
	}
	if dm.ValidateName(target) != nil {
		return "", false, nil
	}
	if _, err := ctl.Status(target); err != nil {
		if errors.Is(err, unix.ENXIO) {
			return "", false, nil
		}
		return "", false, err
	}
	return target, true, nil
}

// Info describes an open kmsagent volume for status.
type Info struct {
	Name        string   `json:"name"`
	LUKSUUID    string   `json:"luks_uuid"`
	Backing     string   `json:"backing"`
	BackingFile string   `json:"backing_file,omitempty"`
	Mountpoints []string `json:"mountpoints"`
	ReadOnly    bool     `json:"read_only"`
	OpenCount   int32    `json:"open_count"`
	Deferred    bool     `json:"deferred_remove"`
	// Cryptsetup: opened by cryptsetup, not by kmsagent (ListLUKS2).
	Cryptsetup bool `json:"cryptsetup,omitempty"`
}

// List returns the open kmsagent volumes.
func List(ctl *dm.Control) ([]Info, error) { return list(ctl, false) }

// ListLUKS2 returns the open kmsagent volumes and the LUKS2 volumes
// cryptsetup opened (in the initramfs, or systemd-cryptsetup with a key
// from kmsagent), the latter with Cryptsetup set: the caller decides by
// their headers which of them are kmsagent volumes. Those stay
// cryptsetup's to close.
func ListLUKS2(ctl *dm.Control) ([]Info, error) { return list(ctl, true) }

func list(ctl *dm.Control, cryptsetup bool) ([]Info, error) {
	devs, err := ctl.List()
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for _, d := range devs {
		tab, err := ctl.Table(d.Name)
		if err != nil {
			continue
		}
		p, opener := classify(d.Name, d.UUID, tab)
		if opener == openerNone || opener == openerCryptsetup && !cryptsetup {
			continue
		}
		info, err := ctl.Status(d.Name)
		if err != nil {
			continue
		}
		in := Info{Name: d.Name, LUKSUUID: luksUUIDOf(d.UUID), ReadOnly: info.ReadOnly(), OpenCount: info.OpenCount,
			Deferred: info.DeferredRemove(), Cryptsetup: opener == openerCryptsetup}
		if b, ok := parseDevNum(p.Device); ok {
			in.Backing = blockName(b)
			if unix.Major(b) == loopMajor {
				in.BackingFile = loopBacking(b)
			}
		}
		in.Mountpoints, _ = mountsOf(info.Dev)
		out = append(out, in)
	}
	return out, nil
}

// Who set up a device-mapper device, as classify tells from its uuid and
// table.
const (
	openerNone       = iota // not a LUKS2 dm-crypt volume
	openerKmsagent          // ours: the key is a kmsagent logon key
	openerCryptsetup        // a LUKS2 volume with any other key reference
)

// classify tells a kmsagent mapping from one cryptsetup made for a LUKS2
// header (device-mapper uuid CRYPT-LUKS2-<uuid>-<name>, one crypt
// target) and from everything else.
func classify(name, dmUUID string, tab []dm.Target) (dm.CryptParams, int) {
	if p, err := ourTable(name, tab); err == nil {
		return p, openerKmsagent
	}
	if len(tab) != 1 || tab[0].Type != dm.CryptTarget || luksUUIDOf(dmUUID) == "" {
		return dm.CryptParams{}, openerNone
	}
	p, err := dm.ParseCryptParams(tab[0].Params)
	if err != nil {
		return dm.CryptParams{}, openerNone
	}
	return p, openerCryptsetup
}

// luksUUIDOf recovers the LUKS uuid from a CRYPT-LUKS2-<hex>-<name>
// device-mapper uuid.
func luksUUIDOf(dmUUID string) string {
	rest, ok := strings.CutPrefix(dmUUID, "CRYPT-LUKS2-")
	if !ok || len(rest) < 32 {
		return ""
	}
	h := rest[:32]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// blockName returns /dev/<name> of a block device number, or its
// major:minor when sysfs does not say.
func blockName(dev uint64) string {
	l, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	}
	return "/dev/" + filepath.Base(l)
}
