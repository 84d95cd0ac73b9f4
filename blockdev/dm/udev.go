package dm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Where udev runs, it makes /dev/mapper/<name>, the /dev/disk/by-* links
// and (through systemd's rules) the dev-mapper-<name>.device unit, but
// only for devices whose uevents carry libdevmapper's udev flags: the
// device-mapper rules (10-dm.rules upstream, 55-dm.rules in Debian's
// dmsetup package) disable the disk and other rules for the "add" event
// at the first table load, and keep them disabled through udev's
// database for later events unless one says it comes from the primary
// source (DM_UDEV_PRIMARY_SOURCE_FLAG): without the flags, no /dev/disk
// links and SYSTEMD_READY=0. The flags travel in the upper 16 bits of
// dm_ioctl.event_nr of the resume and remove ioctls (the events that
// matter; create sends none); the kernel copies the whole event_nr into
// the uevent as DM_COOKIE, and the rules decode it with "dmsetup
// udevflags".
//
// The lower 16 bits are a cookie: the key of a SysV semaphore, less its
// DM_COOKIE_MAGIC prefix. 95-dm-notify.rules runs "dmsetup udevcomplete
// $env{DM_COOKIE}" as the last step of the event, after the links are
// made, which decrements the semaphore; the process that set the cookie
// waits for zero and removes the semaphore. Waiting is what makes the
// links exist when Resume returns and be gone when Remove returns.
//
// Constants from libdevmapper.h.
const (
	cookieMagic     = 0x0D4D // DM_COOKIE_MAGIC, the upper half of a semaphore key
	udevFlagsShift  = 16     // DM_UDEV_FLAGS_SHIFT
	udevFlagsMask   = 0xFFFF0000
	udevCookieMask  = ^uint32(udevFlagsMask)
	semPerm         = 0o600
	notifyRulesName = "95-dm-notify.rules"

	udevDisableDMRules         = 0x0001 // DM_UDEV_DISABLE_DM_RULES_FLAG: no /dev/mapper link from udev
	udevDisableSubsystemRules  = 0x0002 // DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
	udevDisableLibraryFallback = 0x0020 // DM_UDEV_DISABLE_LIBRARY_FALLBACK: udev makes the nodes
	udevPrimarySource          = 0x0040 // DM_UDEV_PRIMARY_SOURCE_FLAG: the event is the creator's
)

// UdevMode says who makes a device's /dev/mapper/<name> and links.
type UdevMode int

const (
	// UdevNone: no udev runs (an initramfs, a container). The package
	// makes /dev/mapper/<name> itself; there are no /dev/disk links.
	UdevNone UdevMode = iota
	// UdevUnsynced: udev runs, but without libdevmapper's rules (the
	// dmsetup package) or without SysV semaphores, so nobody would
	// signal the end of its work. The package makes /dev/mapper/<name>
	// itself and tells the rules, if any, to leave it alone; links that
	// udev still makes appear asynchronously.
	UdevUnsynced
	// UdevSync: udev runs with 95-dm-notify.rules. udev makes the nodes
	// and links, and Resume and Remove wait for it to finish.
	UdevSync
)

func (m UdevMode) String() string {
	switch m {
	case UdevNone:
		return "no udev"
	case UdevUnsynced:
		return "udev without synchronisation"
	case UdevSync:
		return "udev with synchronisation"
	}
	return fmt.Sprintf("UdevMode(%d)", int(m))
}

// DefaultUdevTimeout bounds the wait for udev when Options.UdevTimeout
// is zero. udev itself gives up on an event after 180 s by default, but
// a device that takes a minute is a stuck udev, and the caller should
// hear of it.
const DefaultUdevTimeout = 60 * time.Second

// ErrUdevWait is wrapped by the error of a Resume or Remove that took
// effect but whose udev event was not seen to finish, within the udev
// timeout or before the context ended.
var ErrUdevWait = errors.New("udev did not finish the device's event")

// Standard locations for detectUdev.
const (
	udevControlSocket = "/run/udev/control"
	sysvSemProc       = "/proc/sysvipc/sem"
)

// udevRulesDirs are udev's rules directories in order of precedence: a
// file in an earlier one overrides (or, as a link to /dev/null, masks)
// the same name in a later one.
var udevRulesDirs = []string{"/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d"}

// detectUdev decides the mode: udev runs when its control socket
// exists (what libudev's udev_queue_get_udev_is_active checks); it can
// signal completion when the notify rule is installed and not masked,
// and the kernel has SysV semaphores.
func detectUdev(control string, rulesDirs []string, semProc string) UdevMode {
	if fi, err := os.Stat(control); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		return UdevNone
	}
	if !ruleInstalled(rulesDirs, notifyRulesName) {
		return UdevUnsynced
	}
	if _, err := os.Stat(semProc); err != nil {
		return UdevUnsynced
	}
	return UdevSync
}

// ruleInstalled reports whether udev would read a rules file of this
// name: the first directory holding it decides, and an empty file or a
// link to /dev/null there masks it.
func ruleInstalled(dirs []string, name string) bool {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return false
		}
		return true
	}
	return false
}

// udevEventNr is dm_ioctl.event_nr carrying udev flags and a cookie.
func udevEventNr(flags uint16, cookie uint32) uint32 {
	return uint32(flags)<<udevFlagsShift | cookie&udevCookieMask
}

// semKey is the SysV key of a cookie's semaphore: the cookie with its
// upper half replaced by DM_COOKIE_MAGIC, as "dmsetup udevcomplete"
// computes it from DM_COOKIE.
func semKey(cookie uint32) uint32 {
	return cookieMagic<<udevFlagsShift | cookie&udevCookieMask
}

// udevFlags are the flags a resume or remove carries in mode m, as
// cryptsetup sets them through libdevmapper: always the primary source;
// with synchronisation, udev alone makes the nodes; without it, the dm
// rules must not race the node this package makes, but the disk rules
// may still add /dev/disk links.
func udevFlags(m UdevMode) uint16 {
	switch m {
	case UdevSync:
		return udevPrimarySource | udevDisableLibraryFallback
	case UdevUnsynced:
		return udevPrimarySource | udevDisableDMRules | udevDisableSubsystemRules
	}
	return udevPrimarySource
}

// cookie is a udev notification semaphore this process created.
type cookie struct {
	key   uint32 // semaphore key, DM_COOKIE_MAGIC<<16 | base
	semid int
	once  sync.Once
	err   error
}

// SysV semaphore commands and struct sembuf, which x/sys/unix lacks.
const (
	semSetVal = 16 // SETVAL
)

type sembuf struct {
	num uint16
	op  int16
	flg int16
}

func semget(key uint32, nsems, flags int) (int, error) {
	id, _, errno := unix.Syscall(unix.SYS_SEMGET, uintptr(int32(key)), uintptr(nsems), uintptr(flags))
	if errno != 0 {
		return -1, errno
	}
	return int(id), nil
}

// semctl runs a command whose argument is an int (SETVAL) or absent.
func semctl(semid, num, cmd, arg int) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(semid), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// semop may block; unix.Syscall lets the scheduler run other goroutines
// meanwhile.
func semop(semid int, ops []sembuf) error {
	_, _, errno := unix.Syscall(unix.SYS_SEMOP, uintptr(semid), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)))
	runtime.KeepAlive(ops)
	if errno != 0 {
		return errno
	}
	return nil
}

// newCookie creates a semaphore under a random unused key with the
// value 1: one event to wait for.
func newCookie() (*cookie, error) {
	for range 256 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("udev cookie: %w", err)
		}
		base := uint32(binary.NativeEndian.Uint16(b[:]))
		if base == 0 {
			continue // a zero base means "flags only, no cookie"
		}
		key := semKey(base)
		id, err := semget(key, 1, unix.IPC_CREAT|unix.IPC_EXCL|semPerm)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return nil, fmt.Errorf("udev cookie: create semaphore: %w (the limit is in /proc/sys/kernel/sem; leaked dm cookies show in /proc/sysvipc/sem with keys 0x0d4d....)", err)
			}
			return nil, fmt.Errorf("udev cookie: create semaphore: %w", err)
		}
		c := &cookie{key: key, semid: id}
		if _, err := semctl(id, 0, semSetVal, 1); err != nil {
			c.destroy()
			return nil, fmt.Errorf("udev cookie %#x: set semaphore: %w", key, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("udev cookie: no free semaphore key after 256 tries")
}

// eventNr is the event_nr of an ioctl that hands this cookie to udev.
func (c *cookie) eventNr(flags uint16) uint32 { return udevEventNr(flags, c.key) }

// destroy removes the semaphore, once: a second IPC_RMID could hit a
// new semaphore that reused the id.
func (c *cookie) destroy() error {
	c.once.Do(func() {
		if _, err := semctl(c.semid, 0, unix.IPC_RMID, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			c.err = fmt.Errorf("udev cookie %#x: remove semaphore: %w", c.key, err)
		}
	})
	return c.err
}

// wait blocks until udev has completed the event (the semaphore is
// zero) or ctx ends, and removes the semaphore either way. Cancelling
// removes the semaphore under the waiter, which wakes it with EIDRM;
// udev's later udevcomplete then finds nothing, which it only logs.
func (c *cookie) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.destroy() })
	var err error
	for {
		err = semop(c.semid, []sembuf{{num: 0, op: 0, flg: 0}})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	cancelled := !stop()
	derr := c.destroy()
	switch {
	case err == nil:
		return derr
	case cancelled && (errors.Is(err, unix.EIDRM) || errors.Is(err, unix.EINVAL)):
		return ctx.Err()
	case errors.Is(err, unix.EIDRM):
		// Someone else removed it ("dmsetup udevcomplete_all"):
		// libdevmapper takes that as done, and so do we.
		return nil
	}
	return fmt.Errorf("udev cookie %#x: wait: %w", c.key, err)
}

// doUevent runs an ioctl after which the kernel sends a uevent for the
// device (resume, remove) with the udev flags of c's mode and, with
// synchronisation, a fresh cookie, then waits for udev to complete the
// event, bounded by ctx and the Control's udev timeout. err is the
// ioctl's failure; waitErr says the ioctl took effect but udev was not
// seen to finish. When the ioctl fails, or the kernel sent no event (a
// resume of a running device, a deferred remove of a busy one), nobody
// will complete the cookie, so it is removed at once, as libdevmapper
// does.
func (c *Control) doUevent(ctx context.Context, r request, op string) (h header, err, waitErr error) {
	flags := udevFlags(c.udev)
	r.eventNr = udevEventNr(flags, 0)
	if c.udev != UdevSync {
		h, _, err := c.do(r)
		return h, opError(op, r.name, err), nil
	}
	ck, err := newCookie()
	if err != nil {
		return header{}, opError(op, r.name, err), nil
	}
	r.eventNr = ck.eventNr(flags)
	h, _, err = c.do(r)
	if err != nil || h.Flags&flagUeventGenerated == 0 {
		if derr := ck.destroy(); derr != nil {
			waitErr = opError(op, r.name, derr)
		}
		return h, opError(op, r.name, err), waitErr
	}
	wctx, cancel := context.WithTimeout(ctx, c.udevTimeout)
	defer cancel()
	if err := ck.wait(wctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return h, nil, fmt.Errorf("dm: %s %q: %w within %v (is udevd stuck, or in another IPC namespace than this process?): %w", op, r.name, ErrUdevWait, c.udevTimeout, err)
		}
		return h, nil, fmt.Errorf("dm: %s %q: %w: %w", op, r.name, ErrUdevWait, err)
	}
	return h, nil, nil
}
