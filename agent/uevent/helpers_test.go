package uevent

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// inNewNetns runs f on a thread moved to a new network namespace, so
// sockets f opens see only each other's multicast messages and fake
// events never reach the host's listeners. The thread is never unlocked:
// it exits with its goroutine instead of going back to the scheduler in
// the wrong namespace.
func inNewNetns(t *testing.T, f func() error) {
	t.Helper()
	tstest.NeedRoot(t, "to unshare a network namespace")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// sender is a netlink socket that writes fake events.
type sender struct{ fd int }

func newSender() (*sender, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &sender{fd}, nil
}

// send sends msg to the groups mask, or to port when groups is 0, with
// cred as SCM_CREDENTIALS when set (root may claim any uid there).
func (s *sender) send(msg []byte, groups, port uint32, cred *unix.Ucred) error {
	var oob []byte
	if cred != nil {
		oob = unix.UnixCredentials(cred)
	}
	return unix.Sendmsg(s.fd, msg, oob, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups, Pid: port}, 0)
}

func (s *sender) close() { unix.Close(s.fd) }

// props encodes KEY=VALUE pairs NUL-terminated.
func props(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = append(append(b, s...), 0)
	}
	return b
}

// udevMsg builds a message the way udevd's device_monitor_send does.
func udevMsg(kv ...string) []byte {
	p := props(kv...)
	h := make([]byte, udevHeaderSize)
	copy(h, udevPrefix)
	binary.BigEndian.PutUint32(h[8:], udevMagic)
	binary.NativeEndian.PutUint32(h[12:], udevHeaderSize)
	binary.NativeEndian.PutUint32(h[16:], udevHeaderSize)
	binary.NativeEndian.PutUint32(h[20:], uint32(len(p)))
	return append(h, p...)
}

// kernelMsg builds a message the way kobject_uevent does.
func kernelMsg(action, devpath string, kv ...string) []byte {
	return append([]byte(action+"@"+devpath+"\x00"), props(append([]string{"ACTION=" + action, "DEVPATH=" + devpath}, kv...)...)...)
}

// portID returns the netlink port the listener is bound to.
func (l *Listener) portID(t *testing.T) uint32 {
	t.Helper()
	var port uint32
	var serr error
	if err := l.rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		sa, serr = unix.Getsockname(int(fd))
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			port = nl.Pid
		}
	}); err != nil || serr != nil {
		t.Fatalf("getsockname: %v %v", err, serr)
	}
	return port
}
