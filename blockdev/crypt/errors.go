package crypt

import "fmt"

// The errors below say what is wrong; the command line adds what to do
// about it (which flag, which command).

// AlreadyOpenError is a volume mapped already; it is ErrAlreadyOpen.
type AlreadyOpenError struct{ Name string }

func (e *AlreadyOpenError) Error() string {
	return fmt.Sprintf("%v as /dev/mapper/%s", ErrAlreadyOpen, e.Name)
}

func (e *AlreadyOpenError) Unwrap() error { return ErrAlreadyOpen }

// NameTakenError is a device-mapper name another device has.
type NameTakenError struct{ Name, UUID string }

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("a device-mapper device named %s exists already (uuid %q)", e.Name, e.UUID)
}

// OpeningError is a volume another process is opening right now.
type OpeningError struct{ LUKSUUID string }

func (e *OpeningError) Error() string {
	return fmt.Sprintf("volume %s is being opened by another kmsagent process", e.LUKSUUID)
}

// UnknownFSError is an opened volume without a file system Open knows.
type UnknownFSError struct{ Device string }

func (e *UnknownFSError) Error() string {
	return fmt.Sprintf("no known file system on %s (wrong key, or not formatted yet?)", e.Device)
}

// UnmountError is a file system Close could not unmount.
type UnmountError struct {
	Mountpoint string
	Err        error
}

func (e *UnmountError) Error() string { return fmt.Sprintf("unmount %s: %v", e.Mountpoint, e.Err) }
func (e *UnmountError) Unwrap() error { return e.Err }
