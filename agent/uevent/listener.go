package uevent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Group is a NETLINK_KOBJECT_UEVENT multicast group.
type Group uint32

const (
	// KernelGroup carries the kernel's events, sent before udev runs.
	KernelGroup Group = 1
	// UdevGroup carries udevd's events, sent after its rules ran and the
	// /dev/disk links exist.
	UdevGroup Group = 2
)

func (g Group) String() string {
	switch g {
	case KernelGroup:
		return "kernel"
	case UdevGroup:
		return "udev"
	}
	return fmt.Sprintf("group %d", uint32(g))
}

// UdevControl is udevd's control socket; it exists while udevd runs.
const UdevControl = "/run/udev/control"

// DetectGroup returns UdevGroup when a udevd control socket exists at
// control (normally UdevControl), else KernelGroup.
func DetectGroup(control string) Group {
	if fi, err := os.Stat(control); err == nil && fi.Mode()&os.ModeSocket != 0 {
		return UdevGroup
	}
	return KernelGroup
}

// DefaultReceiveBuffer is the socket receive buffer asked for when
// Options.ReceiveBuffer is zero.
const DefaultReceiveBuffer = 16 << 20

// Options configure a Listener.
type Options struct {
	// Group is the source of events; required (see DetectGroup).
	Group Group
	// Subsystem, when set, keeps only events of that subsystem
	// ("block").
	Subsystem string
	// Actions, when set, keeps only these actions.
	Actions []Action
	// ReceiveBuffer is the socket receive buffer in bytes; zero means
	// DefaultReceiveBuffer.
	ReceiveBuffer int
	// OnDrop, when set, is called from Next with the reason for every
	// message dropped as untrusted or malformed.
	OnDrop func(error)
}

// Errors of Next, for errors.Is.
var (
	// ErrEventsLost means the receive buffer overflowed and events were
	// dropped by the kernel: rescan the devices. Next can be called again.
	ErrEventsLost = errors.New("uevent: receive buffer overrun, events were lost; rescan devices")
	// ErrClosed means the Listener was closed.
	ErrClosed = errors.New("uevent: listener closed")
	// ErrUntrusted is wrapped by the reasons given to OnDrop for messages
	// from senders that are not the kernel or root.
	ErrUntrusted = errors.New("uevent: message from an untrusted sender")
)

// maxMessage bounds one message. The kernel's are at most 2 KiB
// (UEVENT_BUFFER_SIZE); udev's grow with its properties and links.
const maxMessage = 64 << 10

// Listener receives device events. It is not safe for concurrent Next
// calls; Close may be called at any time.
type Listener struct {
	opts   Options
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
	buf    []byte
	oob    []byte
}

// Listen opens a netlink socket subscribed to opts.Group.
func Listen(opts Options) (*Listener, error) {
	if opts.Group != KernelGroup && opts.Group != UdevGroup {
		return nil, fmt.Errorf("uevent: listen: Options.Group must be KernelGroup or UdevGroup, not %d", uint32(opts.Group))
	}
	if opts.ReceiveBuffer <= 0 {
		opts.ReceiveBuffer = DefaultReceiveBuffer
	}
	opts.Actions = slices.Clone(opts.Actions)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent: netlink socket: %w", err)
	}
	if err := setup(fd, opts); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "uevent-"+opts.Group.String())
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("uevent: %w", err)
	}
	return &Listener{
		opts: opts,
		f:    f,
		rc:   rc,
		buf:  make([]byte, maxMessage),
		oob:  make([]byte, unix.CmsgSpace(unix.SizeofUcred)),
	}, nil
}

func setup(fd int, opts Options) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fmt.Errorf("uevent: SO_PASSCRED: %w", err)
	}
	// FORCE passes net.core.rmem_max, but needs CAP_NET_ADMIN.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, opts.ReceiveBuffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, opts.ReceiveBuffer); err != nil {
			return fmt.Errorf("uevent: SO_RCVBUF: %w", err)
		}
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: uint32(opts.Group)}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("uevent: bind to the %s group: %w", opts.Group, err)
	}
	return nil
}

// Next returns the next event that passes the filter. It returns
// ErrEventsLost after an overrun, ctx.Err() when ctx ends and ErrClosed
// after Close.
func (l *Listener) Next(ctx context.Context) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		l.f.SetReadDeadline(time.Unix(1, 0))
		close(done)
	})
	defer func() {
		if !stop() {
			// The deadline was moved: wait for that, then clear it so the
			// next call does not see it.
			<-done
			l.f.SetReadDeadline(time.Time{})
		}
	}()
	for {
		msg, err := l.receive()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
			return Event{}, ctx.Err()
		case err != nil && l.closed.Load():
			// The runtime's "use of closed file" is not os.ErrClosed.
			return Event{}, ErrClosed
		case errors.Is(err, unix.ENOBUFS):
			return Event{}, ErrEventsLost
		case err != nil:
			return Event{}, fmt.Errorf("uevent: receive: %w", err)
		}
		ev, err := l.accept(msg)
		if err != nil {
			if l.opts.OnDrop != nil {
				l.opts.OnDrop(err)
			}
			continue
		}
		if l.wanted(ev) {
			return ev, nil
		}
	}
}

// message is one datagram with what the kernel says about its sender.
type message struct {
	data   []byte
	from   *unix.SockaddrNetlink
	cred   *unix.Ucred
	truncd bool
}

func (l *Listener) receive() (message, error) {
	var (
		m           message
		n, oobn, fl int
		from        unix.Sockaddr
		rerr        error
	)
	err := l.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, fl, from, rerr = unix.Recvmsg(int(fd), l.buf, l.oob, 0)
			if rerr != unix.EINTR {
				break
			}
		}
		// EAGAIN: wait for the poller to say the socket is readable.
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return message{}, err
	}
	if rerr != nil {
		return message{}, rerr
	}
	m.data = l.buf[:n]
	m.truncd = fl&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0
	m.from, _ = from.(*unix.SockaddrNetlink)
	if cmsgs, err := unix.ParseSocketControlMessage(l.oob[:oobn]); err == nil {
		for i := range cmsgs {
			if c, err := unix.ParseUnixCredentials(&cmsgs[i]); err == nil {
				m.cred = c
			}
		}
	}
	return m, nil
}

// accept checks the sender as libudev does and parses the message.
func (l *Listener) accept(m message) (Event, error) {
	switch {
	case m.truncd:
		return Event{}, malformed("message larger than %d bytes was truncated", maxMessage)
	case m.from == nil:
		return Event{}, fmt.Errorf("%w: no netlink sender address", ErrUntrusted)
	case m.from.Groups == 0:
		return Event{}, fmt.Errorf("%w: unicast message from netlink port %d", ErrUntrusted, m.from.Pid)
	case m.from.Groups != uint32(l.opts.Group):
		return Event{}, fmt.Errorf("%w: message for groups 0x%x on a %s listener", ErrUntrusted, m.from.Groups, l.opts.Group)
	case l.opts.Group == KernelGroup && m.from.Pid != 0:
		return Event{}, fmt.Errorf("%w: kernel-group message from netlink port %d, not the kernel", ErrUntrusted, m.from.Pid)
	case m.cred == nil:
		return Event{}, fmt.Errorf("%w: no sender credentials", ErrUntrusted)
	case m.cred.Uid != 0:
		return Event{}, fmt.Errorf("%w: sender uid %d (pid %d) is not root", ErrUntrusted, m.cred.Uid, m.cred.Pid)
	}
	var (
		ev  Event
		err error
	)
	if l.opts.Group == UdevGroup {
		ev, err = parseUdev(m.data)
	} else {
		ev, err = parseKernel(m.data)
	}
	if err != nil {
		return Event{}, fmt.Errorf("%s message: %w", l.opts.Group, err)
	}
	return ev, nil
}

func (l *Listener) wanted(ev Event) bool {
	if l.opts.Subsystem != "" && ev.Subsystem != l.opts.Subsystem {
		return false
	}
	return len(l.opts.Actions) == 0 || slices.Contains(l.opts.Actions, ev.Action)
}

// Close closes the socket; a Next waiting on it returns ErrClosed.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}
