package uevent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

func TestDetectGroup(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want Group
	}{
		{sock, UdevGroup},
		{file, KernelGroup},
		{filepath.Join(dir, "missing"), KernelGroup},
	} {
		if got := DetectGroup(tt.path); got != tt.want {
			t.Errorf("DetectGroup(%s) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestListenNeedsGroup(t *testing.T) {
	for _, g := range []Group{0, 3, 4} {
		if l, err := Listen(Options{Group: g}); err == nil {
			l.Close()
			t.Errorf("Listen with group %d succeeded", g)
		}
	}
}

// TestNextCancel checks that Next returns when its context ends, before
// or while it waits, and that nothing keeps running afterwards.
func TestNextCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	// Nothing is sent on the udev group here (no udevd), so Next waits.
	l, err := Listen(Options{Group: UdevGroup, Subsystem: "kmsagent-test-none"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context = %v", err)
	}
	for range 3 { // a stale deadline must not leak into the next call
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		start := time.Now()
		_, err := l.Next(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Next took %v to notice its deadline", d)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before, %d after", before, after)
	}
}

func TestCloseUnblocksNext(t *testing.T) {
	l, err := Listen(Options{Group: UdevGroup, Subsystem: "kmsagent-test-none"})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := l.Next(context.Background())
		errc <- err
	}()
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Next did not return after Close")
	}
}

// TestSenderChecks sends forged messages then a genuine one in a private
// network namespace; the listener must skip the forgeries, report why,
// and return the genuine event.
func TestSenderChecks(t *testing.T) {
	me := int32(os.Getpid())
	nobody := &unix.Ucred{Pid: me, Uid: 65534, Gid: 65534}
	good := udevMsg("ACTION=add", "DEVPATH=/devices/virtual/block/good", "SUBSYSTEM=block", "SEQNUM=2", "DEVNAME=/dev/good")
	const synthUUID = "6b1e5b0c-3f0e-4a53-9d7e-2c1f1a3f5e77"
	fake := udevMsg("ACTION=add", "DEVPATH=/devices/virtual/block/fake", "SUBSYSTEM=block", "SEQNUM=1", "DEVNAME=/dev/fake")
	kfake := kernelMsg("add", "/devices/virtual/block/fake", "SUBSYSTEM=block", "SEQNUM=1", "DEVNAME=fake")
	tests := []struct {
		name  string
		group Group
		// send the forgery; port is the listener's netlink port
		forge   func(s *sender, port uint32) error
		genuine func(s *sender) error
		want    error // what OnDrop must be told
	}{
		{
			name:    "udev group, sender claims uid 65534",
			group:   UdevGroup,
			forge:   func(s *sender, _ uint32) error { return s.send(fake, uint32(UdevGroup), 0, nobody) },
			genuine: func(s *sender) error { return s.send(good, uint32(UdevGroup), 0, nil) },
			want:    ErrUntrusted,
		},
		{
			name:    "udev group, unicast to the listener",
			group:   UdevGroup,
			forge:   func(s *sender, port uint32) error { return s.send(fake, 0, port, nil) },
			genuine: func(s *sender) error { return s.send(good, uint32(UdevGroup), 0, nil) },
			want:    ErrUntrusted,
		},
		{
			name:    "udev group, kernel format",
			group:   UdevGroup,
			forge:   func(s *sender, _ uint32) error { return s.send(kfake, uint32(UdevGroup), 0, nil) },
			genuine: func(s *sender) error { return s.send(good, uint32(UdevGroup), 0, nil) },
			want:    ErrMalformed,
		},
		{
			name:    "udev group, malformed",
			group:   UdevGroup,
			forge:   func(s *sender, _ uint32) error { return s.send(fake[:len(fake)-10], uint32(UdevGroup), 0, nil) },
			genuine: func(s *sender) error { return s.send(good, uint32(UdevGroup), 0, nil) },
			want:    ErrMalformed,
		},
		{
			name:  "kernel group, root process pretending to be the kernel",
			group: KernelGroup,
			forge: func(s *sender, _ uint32) error { return s.send(kfake, uint32(KernelGroup), 0, nil) },
			// The genuine kernel event: a synthetic uevent of a device
			// that belongs to no network namespace reaches all of them.
			genuine: func(*sender) error {
				return os.WriteFile("/sys/devices/virtual/mem/null/uevent", []byte("change "+synthUUID+" KMSAGENT=1"), 0)
			},
			want: ErrUntrusted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var drops []error
			var got Event
			inNewNetns(t, func() error {
				l, err := Listen(Options{Group: tt.group, OnDrop: func(err error) { drops = append(drops, err) }})
				if err != nil {
					return err
				}
				defer l.Close()
				s, err := newSender()
				if err != nil {
					return err
				}
				defer s.close()
				if err := tt.forge(s, l.portID(t)); err != nil {
					return fmt.Errorf("send forgery: %w", err)
				}
				if err := tt.genuine(s); err != nil {
					return fmt.Errorf("send genuine event: %w", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for {
					// Genuine kernel events of the host may come first.
					if got, err = l.Next(ctx); err != nil || got.DevName == "good" || got.Env["SYNTH_UUID"] == synthUUID {
						return err
					}
				}
			})
			if got.DevPath == "/devices/virtual/block/fake" || got.DevName == "fake" || got.DevPath == "" {
				t.Fatalf("forged event accepted: %+v", got)
			}
			if len(drops) != 1 || !errors.Is(drops[0], tt.want) {
				t.Fatalf("OnDrop got %v, want one %v", drops, tt.want)
			}
			t.Logf("dropped: %v; then got %s %s", drops[0], got.Action, got.DevPath)
		})
	}
}

// TestEventsLost overflows a small receive buffer and expects Next to
// say so, then to go on delivering events.
func TestEventsLost(t *testing.T) {
	const n = 200
	var lost bool
	var got int
	var marker Event
	inNewNetns(t, func() error {
		l, err := Listen(Options{Group: UdevGroup, ReceiveBuffer: 4096})
		if err != nil {
			return err
		}
		defer l.Close()
		s, err := newSender()
		if err != nil {
			return err
		}
		defer s.close()
		// Multicast delivery happens inside sendmsg: when the loop ends,
		// every message is queued or already dropped.
		for i := range n {
			msg := udevMsg("ACTION=change", "DEVPATH=/devices/virtual/block/x", "SUBSYSTEM=block", "SEQNUM="+strconv.Itoa(i+1))
			if err := s.send(msg, uint32(UdevGroup), 0, nil); err != nil {
				return err
			}
		}
		for {
			// The queue is complete, so a short wait only ends it when
			// it is empty.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := l.Next(ctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			if errors.Is(err, ErrEventsLost) {
				lost = true
				continue
			}
			if err != nil {
				return err
			}
			got++
		}
		if err := s.send(udevMsg("ACTION=remove", "DEVPATH=/devices/virtual/block/x", "SUBSYSTEM=block", "SEQNUM=1000"), uint32(UdevGroup), 0, nil); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		marker, err = l.Next(ctx)
		return err
	})
	if !lost {
		t.Fatalf("%d events into a 4 KiB buffer, %d received: no ErrEventsLost", n, got)
	}
	if got >= n {
		t.Fatalf("all %d events arrived: the buffer did not overflow", got)
	}
	if marker.Seqnum != 1000 {
		t.Fatalf("after the overrun Next returned %+v", marker)
	}
	t.Logf("%d of %d events arrived, the loss was reported, later events still arrive", got, n)
}

// TestLoopDevice creates a loop device, attaches a file, detaches and
// removes it, and expects the kernel's add, change and remove events
// for block/loopN.
func TestLoopDevice(t *testing.T) {
	tstest.NeedRoot(t, "to attach a loop device")
	l, err := Listen(Options{Group: KernelGroup, Subsystem: "block"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	// LOOP_CTL_ADD with -1 makes a new device at the lowest unused index.
	idx, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, ^uintptr(0))
	if errno != 0 {
		t.Fatalf("LOOP_CTL_ADD: %v", errno)
	}
	name := "loop" + strconv.Itoa(int(idx))
	removed := false
	defer func() {
		if !removed {
			unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, idx)
		}
	}()

	wait := func(action Action) Event {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			ev, err := l.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %s of %s: %v", action, name, err)
			}
			if ev.DevName == name && ev.Action == action {
				return ev
			}
		}
	}
	add := wait(ActionAdd)
	st, err := os.Stat("/dev/" + name)
	if err != nil {
		t.Fatalf("devtmpfs node after add: %v", err)
	}
	if dev := st.Sys().(*syscall.Stat_t).Rdev; add.Dev() != dev || add.Major != 7 {
		t.Errorf("add event device %d:%d, node is %d:%d", add.Major, add.Minor, unix.Major(dev), unix.Minor(dev))
	}
	if add.Subsystem != "block" || add.DevType != "disk" || add.DevPath != "/devices/virtual/block/"+name || add.Seqnum == 0 {
		t.Errorf("add event %+v", add)
	}

	backing := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(backing, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	bf, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	lf, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.IoctlLoopConfigure(int(lf.Fd()), &unix.LoopConfig{Fd: uint32(bf.Fd())}); err != nil {
		t.Fatalf("attach %s: %v", name, err)
	}
	wait(ActionChange)
	// While the device is open the kernel defers the detach to the last
	// close.
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		t.Fatalf("detach %s: %v", name, err)
	}
	lf.Close()
	wait(ActionChange)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, idx); errno != 0 {
		t.Fatalf("LOOP_CTL_REMOVE %s: %v", name, errno)
	}
	removed = true
	rm := wait(ActionRemove)
	if rm.Dev() != add.Dev() || rm.Seqnum <= add.Seqnum {
		t.Errorf("remove event %+v after add %+v", rm, add)
	}
}

// TestReceiveBuffer checks that root gets the buffer it asks for beyond
// net.core.rmem_max (SO_RCVBUFFORCE).
func TestReceiveBuffer(t *testing.T) {
	rcvbuf := func(l *Listener) int {
		var n int
		var gerr error
		if err := l.rc.Control(func(fd uintptr) {
			n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}); err != nil || gerr != nil {
			t.Fatalf("getsockopt: %v %v", err, gerr)
		}
		return n
	}
	l, err := Listen(Options{Group: KernelGroup})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := rcvbuf(l)
	if os.Geteuid() == 0 && n < DefaultReceiveBuffer {
		t.Errorf("SO_RCVBUF is %d as root, want at least %d", n, DefaultReceiveBuffer)
	}
	t.Logf("SO_RCVBUF %d", n)
}
