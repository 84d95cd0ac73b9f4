package tstest

import (
	"fmt"
	"net"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Creds are credentials a test acts with, to see what a server does with
// a client that is not root: the uid, the primary gid and the
// supplementary groups (none when empty).
type Creds struct {
	UID, GID int
	Groups   []int
}

// RunAs runs fn on an OS thread that has taken the credentials c (real,
// effective and saved) and returns fn's error, or why the credentials
// could not be taken; it needs root. Only that thread changes: the
// system calls are made raw, as syscall.Setuid would change every thread
// of the process. The thread stays locked to its goroutine, so the
// runtime discards it when fn returns instead of running other code with
// those credentials. What the kernel records at connect(), SO_PEERCRED
// and SO_PEERGROUPS, is then c.
func RunAs(c Creds, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := setCreds(c); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setCreds gives the calling thread the credentials c, groups first: once
// the uid is not root, the thread may no longer change the others.
func setCreds(c Creds) error {
	// One spare element, so that &groups[0] exists with no groups.
	groups := make([]uint32, len(c.Groups)+1)
	for i, g := range c.Groups {
		groups[i] = uint32(g)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(c.Groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), uintptr(c.GID)); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), uintptr(c.UID)); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}

// DialAs connects to the unix stream socket path (an abstract address
// when it starts with @) with the credentials c, or as this process when
// c is nil.
func DialAs(path string, c *Creds) (net.Conn, error) {
	if c == nil {
		return net.Dial("unix", path)
	}
	var conn net.Conn
	err := RunAs(*c, func() error {
		var err error
		conn, err = net.Dial("unix", path)
		return err
	})
	return conn, err
}
