package share

import (
	"errors"
	"fmt"

	"kmsagent/fuse/envelope"
)

// The errors below say what is in the way; the command line adds what
// to do about it (which flag, which command).

// ErrNotMounted is a path that is not a mount of a share.
var ErrNotMounted = errors.New("not a kmsagent share mount")

// HeldError is a share mounted already: another process holds its lock.
type HeldError struct {
	Dir    string
	Holder string // what the holder wrote into the lock: its PID and mount point
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s is already mounted on this host (%s)", e.Dir, e.Holder)
}

// MountedError is a mount point a share is mounted on already.
type MountedError struct{ Path, CipherDir string }

func (e *MountedError) Error() string {
	return fmt.Sprintf("%s is already a kmsagent mount of %s", e.Path, e.CipherDir)
}

// BusyError is a mount that cannot be unmounted while files are open on
// it.
type BusyError struct{ Mountpoint string }

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s is busy: a process has files open there (see fuser -vm %s); close them", e.Mountpoint, e.Mountpoint)
}

// NotGocryptfsError is a directory Import cannot adopt.
type NotGocryptfsError struct {
	Dir string
	Err error
}

func (e *NotGocryptfsError) Error() string {
	return fmt.Sprintf("%s is not a gocryptfs v2 directory (%v)", e.Dir, e.Err)
}

func (e *NotGocryptfsError) Unwrap() error { return e.Err }

// HasShareError is a directory that holds a share already, which Format
// replaces only when forced.
type HasShareError struct{ Dir string }

func (e *HasShareError) Error() string {
	return fmt.Sprintf("%s already holds a share (%s)", e.Dir, envelope.FileName)
}

// NotEmptyError is a directory with files in it, which Format formats
// only when forced.
type NotEmptyError struct{ Dir, First string }

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("%s is not empty (%s, ...); format an empty directory", e.Dir, e.First)
}
