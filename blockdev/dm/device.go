package dm

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// DevInfo is the device state the kernel returns with most commands.
type DevInfo struct {
	Name string
	UUID string
	// Dev is the device number as dm_ioctl.dev carries it (the kernel's
	// huge_encode_dev), decoded by Major and Minor.
	Dev         uint64
	OpenCount   int32
	TargetCount uint32
	EventNr     uint32
	Flags       uint32
}

// Major and Minor decode Dev.
func (d DevInfo) Major() uint32 { return unix.Major(d.Dev) }
func (d DevInfo) Minor() uint32 { return unix.Minor(d.Dev) }

// Suspended reports DM_SUSPEND_FLAG.
func (d DevInfo) Suspended() bool { return d.Flags&flagSuspend != 0 }

// ReadOnly reports DM_READONLY_FLAG.
func (d DevInfo) ReadOnly() bool { return d.Flags&flagReadOnly != 0 }

// ActiveTable reports whether a live table is present.
func (d DevInfo) ActiveTable() bool { return d.Flags&flagActivePresent != 0 }

// InactiveTable reports whether a loaded, not yet resumed table is present.
func (d DevInfo) InactiveTable() bool { return d.Flags&flagInactivePresent != 0 }

// DeferredRemove reports that the device is marked for removal on last close.
func (d DevInfo) DeferredRemove() bool { return d.Flags&flagDeferredRemove != 0 }

func infoOf(h header) DevInfo {
	return DevInfo{
		Name: h.Name, UUID: h.UUID, Dev: h.Dev, OpenCount: h.OpenCount,
		TargetCount: h.TargetCount, EventNr: h.EventNr, Flags: h.Flags,
	}
}

// Create makes a device without a table (DM_DEV_CREATE). It exists in
// the suspended state until a table is loaded and resumed. uuid may be
// empty; see CryptUUID for the one LUKS2 volumes use.
func (c *Control) Create(name, uuid string, readOnly bool) (DevInfo, error) {
	if err := ValidateName(name); err != nil {
		return DevInfo{}, err
	}
	if err := validateUUID(uuid); err != nil {
		return DevInfo{}, err
	}
	var flags uint32
	if readOnly {
		flags |= flagReadOnly
	}
	h, _, err := c.do(request{cmd: unix.DM_DEV_CREATE, name: name, uuid: uuid, flags: flags})
	if err != nil {
		return DevInfo{}, opError(opCreate, name, err)
	}
	return infoOf(h), nil
}

// LoadTable loads targets into the inactive slot (DM_TABLE_LOAD); Resume
// makes them live. The request always carries DM_SECURE_DATA_FLAG, so
// the kernel wipes its copy of the buffer and ours. Crypt targets must
// reference their key in the keyring; dm-crypt looks the key up with the
// calling thread's keyrings, so a key on a thread keyring must have been
// added on the OS thread that calls LoadTable (see package keyring).
func (c *Control) LoadTable(name string, targets []Target, readOnly bool) (DevInfo, error) {
	if err := ValidateName(name); err != nil {
		return DevInfo{}, err
	}
	for _, t := range targets {
		if t.Type != CryptTarget {
			continue
		}
		p, err := ParseCryptParams(t.Params)
		if err != nil {
			return DevInfo{}, fmt.Errorf("dm: load table for %q: %w", name, err)
		}
		if p.InlineKey {
			return DevInfo{}, fmt.Errorf("dm: load table for %q: refusing a crypt table with an inline key; reference a keyring key", name)
		}
	}
	payload, err := encodeTargets(targets)
	if err != nil {
		return DevInfo{}, fmt.Errorf("dm: load table for %q: %w", name, err)
	}
	defer wipeIf(true, payload)
	flags := uint32(flagSecureData)
	if readOnly {
		flags |= flagReadOnly
	}
	h, _, err := c.do(request{cmd: unix.DM_TABLE_LOAD, name: name, flags: flags, targets: uint32(len(targets)), payload: payload})
	if err != nil {
		return DevInfo{}, opError(opLoad, name, err)
	}
	return infoOf(h), nil
}

// Resume makes a loaded table live and resumes I/O (DM_DEV_SUSPEND
// without DM_SUSPEND_FLAG). Where udev runs with synchronisation (see
// UdevMode), it returns once udev has processed the device, so
// /dev/mapper/<name> and the /dev/disk links exist; ctx bounds that wait.
// When nothing else made /dev/mapper/<name>, it makes the node itself.
func (c *Control) Resume(ctx context.Context, name string) (DevInfo, error) {
	if err := ValidateName(name); err != nil {
		return DevInfo{}, err
	}
	h, err, waitErr := c.doUevent(ctx, request{cmd: unix.DM_DEV_SUSPEND, name: name}, opResume)
	if err != nil {
		return DevInfo{}, err
	}
	info := infoOf(h)
	// Also when udev was too slow, so the device is at least usable.
	if _, err := EnsureNode(c.nodeDir, name, info.Dev); err != nil {
		return info, err
	}
	return info, waitErr
}

// Suspend stops I/O to the device after flushing what is in flight and
// freezing a file system on it (DM_DEV_SUSPEND with DM_SUSPEND_FLAG).
func (c *Control) Suspend(name string) (DevInfo, error) {
	if err := ValidateName(name); err != nil {
		return DevInfo{}, err
	}
	h, _, err := c.do(request{cmd: unix.DM_DEV_SUSPEND, name: name, flags: flagSuspend})
	if err != nil {
		return DevInfo{}, opError(opSuspend, name, err)
	}
	return infoOf(h), nil
}

// Status returns the device's state (DM_DEV_STATUS).
func (c *Control) Status(name string) (DevInfo, error) {
	if err := ValidateName(name); err != nil {
		return DevInfo{}, err
	}
	h, _, err := c.do(request{cmd: unix.DM_DEV_STATUS, name: name})
	if err != nil {
		return DevInfo{}, opError(opStatus, name, err)
	}
	return infoOf(h), nil
}

// Table returns the live table as the kernel reports it (DM_TABLE_STATUS
// with DM_STATUS_TABLE_FLAG), e.g. to check that a crypt table shows only
// the keyring reference. The request is marked secure because a table
// loaded by someone else could hold a key.
func (c *Control) Table(name string) ([]Target, error) {
	return c.tableStatus(name, flagStatusTable|flagSecureData, opTable)
}

// TargetStatus returns the targets' run-time status lines (DM_TABLE_STATUS
// without DM_STATUS_TABLE_FLAG).
func (c *Control) TargetStatus(name string) ([]Target, error) {
	return c.tableStatus(name, 0, opStatus)
}

func (c *Control) tableStatus(name string, flags uint32, op string) ([]Target, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	h, data, err := c.do(request{cmd: unix.DM_TABLE_STATUS, name: name, flags: flags, replySize: 16 << 10})
	if err != nil {
		return nil, opError(op, name, err)
	}
	defer wipeIf(flags&flagSecureData != 0, data)
	targets, err := decodeTargets(data, h.TargetCount)
	if err != nil {
		return nil, opError(op, name, err)
	}
	return targets, nil
}

// Message sends a message to the target at sector (DM_TARGET_MSG), e.g.
// "key wipe" to a suspended crypt target. Marked secure because crypt
// messages can carry keys ("key set").
func (c *Control) Message(name string, sector uint64, msg string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if msg == "" {
		return fmt.Errorf("dm: send message to %q: empty message", name)
	}
	payload := make([]byte, align8(msgSectorSize+len(msg)+1))
	defer wipeIf(true, payload)
	native.PutUint64(payload, sector)
	copy(payload[msgSectorSize:], msg)
	_, _, err := c.do(request{cmd: unix.DM_TARGET_MSG, name: name, flags: flagSecureData, payload: payload})
	return opError(opMessage, name, err)
}

// List returns all device-mapper devices (DM_LIST_DEVICES), with uuids
// on kernels that report them.
func (c *Control) List() ([]Device, error) {
	_, data, err := c.do(request{cmd: unix.DM_LIST_DEVICES, flags: flagUUID, replySize: 16 << 10})
	if err != nil {
		return nil, fmt.Errorf("dm: list devices: %w", err)
	}
	devs, err := decodeNameList(data)
	if err != nil {
		return nil, fmt.Errorf("dm: list devices: %w", err)
	}
	return devs, nil
}
