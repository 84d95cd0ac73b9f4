package uevent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Action is what happened to a device.
type Action string

// The actions of kobject_action in the kernel. Block devices see add,
// remove and change (media change, resize, loop attach/detach, udevadm
// trigger).
const (
	ActionAdd     Action = "add"
	ActionRemove  Action = "remove"
	ActionChange  Action = "change"
	ActionMove    Action = "move"
	ActionOnline  Action = "online"
	ActionOffline Action = "offline"
	ActionBind    Action = "bind"
	ActionUnbind  Action = "unbind"
)

// Event is one device event.
type Event struct {
	Action    Action
	DevPath   string // sysfs path without the /sys prefix: /devices/.../block/vdb
	Subsystem string // "block" for disks and partitions
	// DevName is the device node relative to /dev, as the kernel names
	// it ("vdb", "loop3"); "" for devices without a node.
	DevName string
	DevType string // "disk" or "partition" for block devices
	// Major and Minor are the device number; both 0 when the event has
	// none.
	Major, Minor uint32
	Seqnum       uint64
	// FromUdev is set for events received from udevd (UdevGroup).
	FromUdev bool
	// Env holds every property of the message, the ones above included
	// in their raw form (udev's DEVNAME is absolute there).
	Env map[string]string
}

// Dev returns the device number, for comparing with stat's Rdev.
func (e Event) Dev() uint64 { return unix.Mkdev(e.Major, e.Minor) }

// ErrMalformed is wrapped by the errors of Parse.
var ErrMalformed = errors.New("uevent: malformed message")

const (
	udevPrefix     = "libudev\x00"
	udevMagic      = 0xfeedcafe
	udevHeaderSize = 40 // sizeof(struct monitor_netlink_header)
)

// Parse parses one message in either format: libudev's when it starts
// with "libudev\0", the kernel's otherwise. It says nothing about who
// sent it; Listener checks that.
func Parse(msg []byte) (Event, error) {
	if bytes.HasPrefix(msg, []byte(udevPrefix)) {
		return parseUdev(msg)
	}
	return parseKernel(msg)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parseKernel parses "ACTION@DEVPATH\0KEY=VALUE\0...".
func parseKernel(msg []byte) (Event, error) {
	head, props, ok := bytes.Cut(msg, []byte{0})
	if !ok {
		return Event{}, malformed("kernel message has no NUL after its header")
	}
	action, devpath, ok := strings.Cut(string(head), "@")
	if !ok || action == "" || !strings.HasPrefix(devpath, "/") {
		return Event{}, malformed("kernel message header %.64q is not ACTION@/DEVPATH", head)
	}
	ev, err := parseProps(props)
	if err != nil {
		return Event{}, err
	}
	if string(ev.Action) != action || ev.DevPath != devpath {
		return Event{}, malformed("header %.64q disagrees with ACTION=%q DEVPATH=%.64q", head, ev.Action, ev.DevPath)
	}
	return ev, nil
}

// parseUdev parses libudev's struct monitor_netlink_header and the
// properties it points to.
func parseUdev(msg []byte) (Event, error) {
	if len(msg) < udevHeaderSize {
		return Event{}, malformed("udev message of %d bytes is shorter than its %d-byte header", len(msg), udevHeaderSize)
	}
	if string(msg[:len(udevPrefix)]) != udevPrefix {
		return Event{}, malformed("udev message does not start with %q", udevPrefix)
	}
	if m := binary.BigEndian.Uint32(msg[8:]); m != udevMagic {
		return Event{}, malformed("udev message magic 0x%08x, want 0x%08x", m, udevMagic)
	}
	hdrSize := binary.NativeEndian.Uint32(msg[12:])
	off := binary.NativeEndian.Uint32(msg[16:])
	n := binary.NativeEndian.Uint32(msg[20:])
	size := uint64(len(msg))
	switch {
	case hdrSize < udevHeaderSize || uint64(hdrSize) > size:
		return Event{}, malformed("udev header size %d out of range (message %d bytes)", hdrSize, size)
	case off < hdrSize || uint64(off)+uint64(n) > size || n == 0:
		return Event{}, malformed("udev properties at %d+%d outside the %d-byte message", off, n, size)
	}
	ev, err := parseProps(msg[off : off+n])
	if err != nil {
		return Event{}, err
	}
	ev.FromUdev = true
	return ev, nil
}

// parseProps parses NUL-separated KEY=VALUE pairs and fills the Event.
func parseProps(b []byte) (Event, error) {
	ev := Event{Env: make(map[string]string)}
	for len(b) > 0 {
		var field []byte
		field, b, _ = bytes.Cut(b, []byte{0})
		if len(field) == 0 {
			continue // padding
		}
		k, v, ok := strings.Cut(string(field), "=")
		if !ok || k == "" {
			return Event{}, malformed("property %.64q is not KEY=VALUE", field)
		}
		if _, dup := ev.Env[k]; dup {
			return Event{}, malformed("property %.64s appears twice", k)
		}
		ev.Env[k] = v
	}
	for _, k := range []string{"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM"} {
		if ev.Env[k] == "" {
			return Event{}, malformed("no %s property", k)
		}
	}
	ev.Action = Action(ev.Env["ACTION"])
	ev.DevPath = ev.Env["DEVPATH"]
	ev.Subsystem = ev.Env["SUBSYSTEM"]
	ev.DevType = ev.Env["DEVTYPE"]
	if !strings.HasPrefix(ev.DevPath, "/") {
		return Event{}, malformed("DEVPATH %.64q is not absolute", ev.DevPath)
	}
	var err error
	if ev.Seqnum, err = strconv.ParseUint(ev.Env["SEQNUM"], 10, 64); err != nil {
		return Event{}, malformed("SEQNUM %.32q is not a decimal number", ev.Env["SEQNUM"])
	}
	major, hasMajor := ev.Env["MAJOR"]
	minor, hasMinor := ev.Env["MINOR"]
	if hasMajor != hasMinor {
		return Event{}, malformed("MAJOR and MINOR must come together")
	}
	if hasMajor {
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if err1 != nil || err2 != nil {
			return Event{}, malformed("device number %.16q:%.16q is not decimal", major, minor)
		}
		ev.Major, ev.Minor = uint32(ma), uint32(mi)
	}
	if name, ok := ev.Env["DEVNAME"]; ok {
		if ev.DevName, err = devName(name); err != nil {
			return Event{}, err
		}
	}
	return ev, nil
}

// devName reduces DEVNAME to a clean path relative to /dev: the kernel
// sends "vdb" or "cciss/c0d0", udev "/dev/vdb". Anything that would
// leave /dev is refused, so callers can join it to their /dev root.
func devName(name string) (string, error) {
	rel := name
	if strings.HasPrefix(name, "/") {
		var ok bool
		if rel, ok = strings.CutPrefix(name, "/dev/"); !ok {
			return "", malformed("DEVNAME %.64q is not under /dev", name)
		}
	}
	if rel == "" || rel == "." || rel == ".." || path.Clean(rel) != rel || strings.HasPrefix(rel, "../") || strings.HasPrefix(rel, "/") {
		return "", malformed("DEVNAME %.64q is not a clean name under /dev", name)
	}
	return rel, nil
}
