package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/token"
)

// Device is a block device as sysfs lists it, for the daemon's hot-plug
// bookkeeping.
type Device struct {
	Name string // node relative to /dev, as a uevent's DEVNAME: "vdb"
	Dev  uint64 // device number
}

// Devices lists the block devices, disks and partitions.
func (r *Resolver) Devices() ([]Device, error) {
	devs, err := r.devices()
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, Device{Name: d.devName, Dev: d.dev})
	}
	return out, nil
}

// Below returns the devices at the bottom of the stack under the block
// device dev (its sysfs slaves, followed down): for a dm-crypt mapping,
// the disk or partition that holds the LUKS2 header. A device stacked on
// nothing is its own bottom. The kernel announces the removal of each of
// these, so a daemon that notes them while the mapping is up can tell
// which mapping lost its disk.
func (r *Resolver) Below(dev uint64) ([]Device, error) {
	return r.below(dev, 0)
}

func (r *Resolver) below(dev uint64, depth int) ([]Device, error) {
	if depth > 16 {
		return nil, errors.New("block devices stacked more than 16 deep")
	}
	dir := filepath.Join(r.sysRoot(), "dev", "block", fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)))
	ents, err := os.ReadDir(filepath.Join(dir, "slaves"))
	if errors.Is(err, fs.ErrNotExist) {
		ents, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		d, err := r.device(filepath.Base(resolvedDir(dir)))
		if err != nil {
			return nil, err
		}
		return []Device{{Name: d.devName, Dev: d.dev}}, nil
	}
	var out []Device
	for _, e := range ents {
		d, err := r.device(e.Name())
		if err != nil {
			return nil, err
		}
		sub, err := r.below(d.dev, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// resolvedDir follows /sys/dev/block/M:m to the device's directory,
// whose base name is its sysfs name.
func resolvedDir(dir string) string {
	if p, err := filepath.EvalSymlinks(dir); err == nil {
		return p
	}
	return dir
}

// KMSVolume returns the UUID of the LUKS2 header on the block device
// devName (relative to /dev) when the header carries a kmsagent token,
// and "" for any other device (not LUKS2, no such token, empty, gone).
// The device is opened read-only, as for UUID=.
func (r *Resolver) KMSVolume(ctx context.Context, devName string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	d, err := r.device(strings.ReplaceAll(devName, "/", "!"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil || !d.probeable() {
		return "", err
	}
	f, err := r.open(d)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	h, err := luks2.Read(f)
	if err != nil {
		return "", nil
	}
	for _, id := range h.TokenIDs() {
		if raw, err := h.Token(id); err == nil && token.TypeOf(raw) == token.Type {
			return h.UUID(), nil
		}
	}
	return "", nil
}
