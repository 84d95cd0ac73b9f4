package crypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loopMajor is the block major of loop devices.
const loopMajor = 7

// Loop is a loop device attached by Attach. The loop device stays
// attached while Loop holds it open or anybody else uses it; it detaches
// itself (autoclear) when its last user closes it.
type Loop struct {
	Path string // /dev/loopN
	Dev  uint64 // its device number
	f    *os.File
}

// Attach attaches the regular file at path to a free loop device with
// autoclear set, read-only when readOnly. Races with other processes
// taking the same free device are retried.
func Attach(path string, readOnly bool) (*Loop, error) {
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	backing, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: open %s: %w", path, err)
	}
	defer backing.Close() // the loop device keeps its own reference
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: find a free loop device: %w", err)
		}
		l, err := configure(n, backing, path, readOnly)
		if errors.Is(err, unix.EBUSY) && attempt < 20 {
			// Another process configured it between GET_FREE and ours.
			time.Sleep(time.Duration(attempt+1) * time.Millisecond)
			continue
		}
		return l, err
	}
}

func configure(n int, backing *os.File, path string, readOnly bool) (*Loop, error) {
	dev := "/dev/loop" + strconv.Itoa(n)
	f, err := openLoopNode(dev, n)
	if err != nil {
		return nil, err
	}
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if readOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	name := path
	if abs, err := filepath.Abs(path); err == nil {
		name = abs
	}
	copy(cfg.Info.File_name[:unix.LO_NAME_SIZE-1], name)
	if err := unix.IoctlLoopConfigure(int(f.Fd()), &cfg); err != nil {
		f.Close()
		return nil, fmt.Errorf("loop: attach %s to %s: %w", path, dev, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close() // autoclear detaches it
		return nil, fmt.Errorf("loop: stat %s: %w", dev, err)
	}
	return &Loop{Path: dev, Dev: st.Rdev, f: f}, nil
}

// openLoopNode opens /dev/loopN, waiting briefly for devtmpfs to make the
// node of a device loop-control has just created.
func openLoopNode(dev string, n int) (*os.File, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return nil, fmt.Errorf("loop: open %s: %w", dev, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Release drops this process's hold on the loop device. With nobody else
// using it, the kernel detaches it.
func (l *Loop) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Detach detaches the loop device now (LOOP_CLR_FD) and releases it. A
// device still in use is detached when its last user closes it.
func (l *Loop) Detach() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		err = nil // already detached
	}
	if rerr := l.Release(); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("loop: detach %s: %w", l.Path, err)
	}
	return nil
}

// loopBacking returns the backing file of loop device dev, or "" when it
// is not attached.
func loopBacking(dev uint64) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// loopAutoclear reports whether loop device dev detaches on last close.
func loopAutoclear(dev uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/autoclear", unix.Major(dev), unix.Minor(dev)))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// waitLoopDetached waits (bounded) for an autoclear loop device to let go
// of its file after its last user closed it; the kernel does that
// asynchronously.
func waitLoopDetached(dev uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for loopBacking(dev) != "" {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
