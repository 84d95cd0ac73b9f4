package dm

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Spec describes a device for Activate.
type Spec struct {
	Name     string
	UUID     string // e.g. from CryptUUID; may be empty
	Targets  []Target
	ReadOnly bool
}

// Activate creates the device, loads its table and resumes it. It
// returns when /dev/mapper/<name> exists: made by udev, which has then
// also made the /dev/disk links (see Resume), or by this package. When a
// step fails, or udev does not finish within ctx and the udev timeout,
// the device it created is removed again, so a failed activation leaves
// nothing behind. For crypt targets with a thread-keyring key, call it on
// the thread that holds the key (inside keyring.WithLogonKey).
func (c *Control) Activate(ctx context.Context, s Spec) (DevInfo, error) {
	if err := ctx.Err(); err != nil {
		return DevInfo{}, fmt.Errorf("dm: activate %q: %w", s.Name, err)
	}
	if _, err := c.Create(s.Name, s.UUID, s.ReadOnly); err != nil {
		return DevInfo{}, err
	}
	if _, err := c.LoadTable(s.Name, s.Targets, s.ReadOnly); err != nil {
		return DevInfo{}, c.undoCreate(ctx, s.Name, err)
	}
	info, err := c.Resume(ctx, s.Name)
	if err != nil {
		return DevInfo{}, c.undoCreate(ctx, s.Name, err)
	}
	return info, nil
}

// undoCreate removes a half-activated device and returns the original
// error, with the cleanup failure appended when there is one. The
// cleanup runs even when ctx is cancelled, bounded by the udev timeout.
// A removal whose udev event was not seen to finish still removed the
// device, so it is no failed cleanup.
func (c *Control) undoCreate(ctx context.Context, name string, cause error) error {
	if _, err := c.Remove(context.WithoutCancel(ctx), name, RemoveOptions{}); err != nil && !errors.Is(err, ErrUdevWait) {
		return fmt.Errorf("%w (and cleanup failed: %v)", cause, err)
	}
	return cause
}

// Deactivate takes a device down: suspend it (flushing I/O), wipe the
// key of every crypt target ("key wipe"), and remove it. A busy device
// fails with an error wrapping unix.EBUSY and is left untouched, unless
// o.Deferred: then it is only marked for removal on last close, and its
// key stays in use until then (the kernel zeroes it when it destroys the
// table), because suspending a device that is still used would hang its
// users. Like Remove, it waits for udev to remove the links, bounded by
// ctx.
func (c *Control) Deactivate(ctx context.Context, name string, o RemoveOptions) (RemoveResult, error) {
	info, err := c.Status(name)
	if err != nil {
		return RemoveResult{}, err
	}
	if info.OpenCount > 0 {
		if !o.Deferred {
			return RemoveResult{}, fmt.Errorf("dm: deactivate %q: device is busy (open count %d); close its users (unmount, stop holders) or use deferred remove: %w", name, info.OpenCount, unix.EBUSY)
		}
		return c.Remove(ctx, name, o)
	}
	if info.ActiveTable() {
		if err := c.wipeKeys(name, info); err != nil {
			return RemoveResult{}, err
		}
	}
	res, err := c.Remove(ctx, name, RemoveOptions{})
	if err != nil && errors.Is(err, unix.EBUSY) {
		return res, fmt.Errorf("dm: deactivate %q: opened again after its key was wiped; it stays suspended without a key until removed: %w", name, err)
	}
	return res, err
}

// wipeKeys suspends the device and sends "key wipe" to each crypt target.
func (c *Control) wipeKeys(name string, info DevInfo) error {
	targets, err := c.Table(name)
	if err != nil {
		return err
	}
	if !info.Suspended() {
		if _, err := c.Suspend(name); err != nil {
			return err
		}
	}
	for _, t := range targets {
		if t.Type != CryptTarget {
			continue
		}
		if err := c.Message(name, t.Start, "key wipe"); err != nil {
			return err
		}
	}
	return nil
}
