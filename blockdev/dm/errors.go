package dm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// opError wraps an ioctl failure in one line: the operation, the device,
// what the errno usually means for that operation, and the errno itself
// (kept for errors.Is, e.g. errors.Is(err, unix.EBUSY)).
func opError(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("dm: %s %q: %w", op, name, err)
	}
	if hint := errnoHint(op, errno); hint != "" {
		return fmt.Errorf("dm: %s %q: %s: %w", op, name, hint, err)
	}
	return fmt.Errorf("dm: %s %q: %w", op, name, err)
}

// errnoHint explains the errnos device-mapper returns for known causes.
func errnoHint(op string, errno unix.Errno) string {
	switch errno {
	case unix.ENXIO:
		return "no such device-mapper device"
	case unix.EEXIST:
		return "a device with this name or uuid already exists"
	case unix.EBUSY:
		return "device is busy (open, mounted or held by another device)"
	case unix.EPERM, unix.EACCES:
		return "not permitted (needs CAP_SYS_ADMIN)"
	case unix.ENOKEY:
		if op == opLoad {
			return "key not found in the caller's keyrings (add it on the thread that loads the table)"
		}
	case unix.EKEYREJECTED, unix.EKEYREVOKED, unix.EKEYEXPIRED:
		if op == opLoad {
			return "key in the keyring is not usable"
		}
	case unix.EINVAL:
		switch op {
		case opLoad:
			return "table rejected (see the kernel log for the target's reason)"
		case opMessage:
			return "message rejected (crypt key messages need a suspended device)"
		}
	}
	return ""
}

// Operation names used in errors.
const (
	opCreate  = "create"
	opLoad    = "load table for"
	opResume  = "resume"
	opSuspend = "suspend"
	opStatus  = "status of"
	opTable   = "read table of"
	opMessage = "send message to"
	opRemove  = "remove"
)
