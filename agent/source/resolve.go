package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"kmsagent/agent/uuid"
	"kmsagent/blockdev/luks2"
)

// Resolver finds devices under a sysfs and a /dev root. The zero value
// uses the system's. It keeps no state between calls and is safe for
// concurrent use.
type Resolver struct {
	SysRoot string // default /sys
	DevRoot string // default /dev

	// checkNode checks that the node at path, described by fi, is the
	// device dev. Tests replace it to use regular files as nodes.
	checkNode func(path string, fi fs.FileInfo, dev uint64) error
}

func (r *Resolver) sysRoot() string {
	if r.SysRoot == "" {
		return "/sys"
	}
	return r.SysRoot
}

func (r *Resolver) devRoot() string {
	if r.DevRoot == "" {
		return "/dev"
	}
	return r.DevRoot
}

// Resolve returns the path of the device or image file spec names.
func (r *Resolver) Resolve(ctx context.Context, spec string) (string, error) {
	s, err := Parse(spec)
	if err != nil {
		return "", err
	}
	if s.Kind == Path {
		return resolvePath(spec, s.Value)
	}
	devs, err := r.devices()
	if err != nil {
		return "", &Error{Spec: spec, Err: err}
	}
	var found []blockDev
	var unreadable []string
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		ok, err := r.match(s, d)
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s: %v", d.devName, err))
			continue
		}
		if ok {
			found = append(found, d)
		}
	}
	found = topOfStacks(found)
	switch len(found) {
	case 0:
		return "", notFound(spec, s, len(devs), unreadable)
	case 1:
		return r.node(spec, found[0])
	}
	var paths []string
	for _, d := range found {
		paths = append(paths, filepath.Join(r.devRoot(), d.devName))
	}
	what := "carry this LUKS2 UUID (is one a disk created from a snapshot of the other?); detach the copy, or name the volume by evs:<volume id> or by path"
	if s.Kind == EVS {
		what = fmt.Sprintf("report serial %q; name the volume by path", s.serial())
	}
	return "", &Error{Spec: spec, Err: ErrAmbiguous, Devices: paths,
		Detail: strings.Join(paths, ", ") + " " + what}
}

// Matches reports whether the block device devName (relative to /dev,
// as in a uevent's DEVNAME: "vdb") is the one spec names. For a path it
// compares device numbers, so a /dev/disk/by-id link matches the disk it
// points to; an image file matches no device. A device that is gone
// matches nothing.
func (r *Resolver) Matches(ctx context.Context, spec, devName string) (bool, error) {
	s, err := Parse(spec)
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	d, err := r.device(strings.ReplaceAll(devName, "/", "!"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &Error{Spec: spec, Err: err}
	}
	if s.Kind == Path {
		fi, err := os.Stat(s.Value)
		if err != nil || fi.Mode().Type() != fs.ModeDevice {
			return false, nil
		}
		return fi.Sys().(*syscall.Stat_t).Rdev == d.dev, nil
	}
	ok, err := r.match(s, d)
	if err != nil {
		return false, &Error{Spec: spec, Err: err, Detail: "reading " + filepath.Join(r.devRoot(), d.devName)}
	}
	return ok, nil
}

// match checks one device against a UUID= or evs: source.
func (r *Resolver) match(s Spec, d blockDev) (bool, error) {
	if s.Kind == EVS {
		return slices.ContainsFunc(d.serials(), func(serial string) bool {
			return strings.EqualFold(serial, s.serial())
		}), nil
	}
	if !d.probeable() {
		return false, nil
	}
	f, err := r.open(d)
	if err != nil {
		return false, err
	}
	defer f.Close()
	// An unreadable start of the device is worth reporting; everything
	// after it is the LUKS2 reader's business.
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	h, err := luks2.Read(f)
	if err != nil {
		return false, nil // not LUKS2, or a header cryptsetup would not open either
	}
	got, err := uuid.Parse(h.UUID())
	return err == nil && got.String() == s.Value, nil
}

// open opens d's node read-only (see the package doc for why never for
// writing) after checking that it is d.
func (r *Resolver) open(d blockDev) (*os.File, error) {
	path := filepath.Join(r.devRoot(), d.devName)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = r.check(path, fi, d.dev)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (r *Resolver) check(path string, fi fs.FileInfo, dev uint64) error {
	if r.checkNode != nil {
		return r.checkNode(path, fi, dev)
	}
	if fi.Mode().Type() != fs.ModeDevice {
		return fmt.Errorf("%s is not a block device node", path)
	}
	if got := fi.Sys().(*syscall.Stat_t).Rdev; got != dev {
		return fmt.Errorf("%s is device %d:%d, sysfs says %d:%d (stale /dev?)",
			path, unix.Major(got), unix.Minor(got), unix.Major(dev), unix.Minor(dev))
	}
	return nil
}

// node returns the checked /dev path of a device that matched.
func (r *Resolver) node(spec string, d blockDev) (string, error) {
	path := filepath.Join(r.devRoot(), d.devName)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", &Error{Spec: spec, Err: ErrNotFound,
			Detail: fmt.Sprintf("%s (%d:%d) matches but %s does not exist; is devtmpfs mounted on %s?",
				d.name, unix.Major(d.dev), unix.Minor(d.dev), path, r.devRoot())}
	}
	if err == nil {
		err = r.check(path, fi, d.dev)
	}
	if err != nil {
		return "", &Error{Spec: spec, Err: err}
	}
	return path, nil
}

// topOfStacks drops devices that another match is stacked on: a
// multipath or linear map over a whole device shows the same header.
func topOfStacks(found []blockDev) []blockDev {
	return slices.DeleteFunc(slices.Clone(found), func(lower blockDev) bool {
		return slices.ContainsFunc(found, func(upper blockDev) bool { return upper.holds(lower) })
	})
}

func notFound(spec string, s Spec, n int, unreadable []string) error {
	var detail string
	switch s.Kind {
	case UUID:
		detail = fmt.Sprintf("none of the %d block devices has a LUKS2 header with UUID %s; check that the disk is attached and formatted (cryptsetup luksUUID <device>)", n, s.Value)
	case EVS:
		detail = fmt.Sprintf("no disk has serial %q (virtio serial or SCSI VPD page 0x80); check that volume %s is attached to this server; a SCSI-mode EVS disk has no such serial: name it by UUID= or by path", s.serial(), s.Value)
	}
	if len(unreadable) > 0 {
		detail += fmt.Sprintf("; %d could not be read: %s", len(unreadable), strings.Join(unreadable, "; "))
	}
	return &Error{Spec: spec, Err: ErrNotFound, Detail: detail}
}

// resolvePath follows a path source's links to a block device or
// regular file.
func resolvePath(spec, path string) (string, error) {
	target, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", &Error{Spec: spec, Err: ErrNotFound,
			Detail: fmt.Sprintf("%s does not exist (a disk that is not attached yet, or a dangling link)", path)}
	}
	if err != nil {
		return "", &Error{Spec: spec, Err: err}
	}
	fi, err := os.Stat(target)
	if err != nil {
		return "", &Error{Spec: spec, Err: err}
	}
	if !fi.Mode().IsRegular() && fi.Mode().Type() != fs.ModeDevice {
		return "", &Error{Spec: spec, Err: ErrNotBlockDevice, Detail: fmt.Sprintf("%s is %s", target, describe(fi.Mode()))}
	}
	return target, nil
}

func describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a file or device (" + m.String() + ")"
}

// Resolve is (&Resolver{}).Resolve: the system's /sys and /dev.
func Resolve(ctx context.Context, spec string) (string, error) {
	return (&Resolver{}).Resolve(ctx, spec)
}

// Matches is (&Resolver{}).Matches.
func Matches(ctx context.Context, spec, devName string) (bool, error) {
	return (&Resolver{}).Matches(ctx, spec, devName)
}
