package dm

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// RemoveOptions tunes Remove.
type RemoveOptions struct {
	// Deferred asks the kernel to remove a device that is still open when
	// its last user closes it (DM_DEFERRED_REMOVE), instead of failing
	// with EBUSY.
	Deferred bool
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	// Deferred is set when the device was busy and is only marked for
	// removal on last close; it (and its node) still exist.
	Deferred bool
}

// Remove destroys the device and its tables (DM_DEV_REMOVE) and removes
// the /dev/mapper node this package made. Where udev runs with
// synchronisation, it returns once udev has removed the device's links;
// ctx bounds that wait, not the removal. A busy device fails with an
// error that wraps unix.EBUSY and gives the open count, unless
// o.Deferred, which marks it for removal instead and says so in the
// result.
func (c *Control) Remove(ctx context.Context, name string, o RemoveOptions) (RemoveResult, error) {
	if err := ValidateName(name); err != nil {
		return RemoveResult{}, err
	}
	// The status gives the device number, to remove the node after the
	// device, and the open count, to explain EBUSY.
	st, _, err := c.do(request{cmd: unix.DM_DEV_STATUS, name: name})
	if err != nil {
		return RemoveResult{}, opError(opRemove, name, err)
	}
	info := infoOf(st)
	var flags uint32
	if o.Deferred {
		flags |= flagDeferredRemove
	}
	h, err, waitErr := c.doUevent(ctx, request{cmd: unix.DM_DEV_REMOVE, name: name, flags: flags}, opRemove)
	if errors.Is(err, unix.EBUSY) {
		return RemoveResult{}, fmt.Errorf("dm: remove %q: device is busy (open count %d); close its users (unmount, stop holders) or use deferred remove: %w", name, info.OpenCount, unix.EBUSY)
	}
	if err != nil {
		return RemoveResult{}, err
	}
	if o.Deferred && h.Flags&flagDeferredRemove != 0 {
		return RemoveResult{Deferred: true}, waitErr
	}
	if err := RemoveNode(c.nodeDir, name, info.Dev); err != nil {
		return RemoveResult{}, err
	}
	return RemoveResult{}, waitErr
}
