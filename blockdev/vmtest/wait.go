package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Lines of the request protocol on the console: the guest prints
// "VMTEST-WAIT name", the host acts and answers "VMTEST-DONE name" on the
// guest's serial input.
const (
	waitPrefix = "VMTEST-WAIT"
	donePrefix = "VMTEST-DONE"
)

// guestConsole is the guest's end of the console.
const guestConsole = "/dev/ttyS0"

// WaitFunc is what the host does when the guest asks for it by name
// (AskHost), on the running VM through its QMP monitor mon: attach or
// detach a disk, say. When it returns, the host answers the guest, which
// then carries on; an error stops the VM instead and fails the boot with
// it. ctx ends when the boot does. What the guest's kernel makes of the
// action (a disk node appearing) may come later: the guest waits for that
// itself, bounded.
type WaitFunc func(ctx context.Context, name string, mon *QMP) error

// AskHost asks the host to run its WaitFunc (Machine.OnWait,
// Config.OnWait) for name and waits until it did, for as long as the
// boot may take. A shell script does the same with
//
//	echo "VMTEST-WAIT name"; read -r _ </dev/ttyS0
//
// which works because the console stays open while the script runs, so
// the answer waits in the terminal's input buffer.
func AskHost(name string) error {
	name = oneLine(name)
	// Opened before asking, so the answer cannot come before a reader.
	tty, err := os.Open(guestConsole)
	if err != nil {
		return fmt.Errorf("vmtest: ask the host: %w", err)
	}
	defer tty.Close()
	fmt.Fprintf(os.Stdout, "%s %s\n", waitPrefix, name)
	sc := bufio.NewScanner(tty)
	for sc.Scan() {
		if done, ok := markerArg(sc.Text(), donePrefix); ok && done == name {
			return nil
		}
	}
	return fmt.Errorf("vmtest: no answer from the host to %q: %v", name, sc.Err())
}

// markerArg returns the argument of a prefix line (the name in
// "VMTEST-WAIT name"), if line has one. Kernel messages may precede the
// marker on the same line.
func markerArg(line, prefix string) (string, bool) {
	i := strings.Index(line, prefix+" ")
	if i < 0 {
		return "", false
	}
	arg := strings.TrimSpace(line[i+len(prefix)+1:])
	return arg, arg != ""
}

// session is the host's side of an interactive boot: the console, read
// as the guest writes it, and the monitor.
type session struct {
	console, monitor *os.File        // qemu's ends, passed as fds 3 and 4
	con, mon         net.Conn        // ours
	log              *os.File        // the console log
	ctx              context.Context // qemu's; ends when the boot does
	cancel           context.CancelFunc
	done             chan error
}

// interactive prepares a boot with m.OnWait: qemu gets the console and a
// QMP monitor as connected sockets (fd=3 and fd=4), so nothing needs a
// path, a listening socket or a wait for qemu to create one; the console
// is copied into the file console as it arrives. The returned command
// runs under a context that the session cancels when OnWait fails.
func (m Machine) interactive(ctx context.Context, console string) (*exec.Cmd, *session, error) {
	args, err := m.args("chardev:vmtest-console")
	if err != nil {
		return nil, nil, err
	}
	args = append(args,
		"-chardev", "socket,id=vmtest-console,fd=3",
		"-chardev", "socket,id=vmtest-qmp,fd=4",
		"-mon", "chardev=vmtest-qmp,mode=control")
	s := &session{done: make(chan error, 1)}
	if s.log, err = os.OpenFile(console, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600); err != nil {
		return nil, nil, fmt.Errorf("console log: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	var qemuCon, qemuMon *os.File
	if s.con, qemuCon, err = socketPair("vmtest-console"); err != nil {
		s.log.Close()
		s.cancel()
		return nil, nil, err
	}
	if s.mon, qemuMon, err = socketPair("vmtest-qmp"); err != nil {
		s.con.Close()
		qemuCon.Close()
		s.log.Close()
		s.cancel()
		return nil, nil, err
	}
	s.console, s.monitor = qemuCon, qemuMon
	cmd := exec.CommandContext(s.ctx, m.QEMU, args...)
	cmd.ExtraFiles = []*os.File{qemuCon, qemuMon}
	return cmd, s, nil
}

// socketPair returns two connected stream sockets: one as a net.Conn,
// one as a file to hand to qemu.
func socketPair(name string) (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), name)
	defer ours.Close() // net.FileConn dups it
	conn, err := net.FileConn(ours)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return conn, os.NewFile(uintptr(fds[1]), name+"-qemu"), nil
}

// start runs the session once qemu has started (qemu holds its ends
// now): one goroutine copies the console to the file and picks out the
// guest's requests, another answers them in order.
func (s *session) start(onWait WaitFunc) {
	s.console.Close()
	s.monitor.Close()
	// Buffered generously: the console is read on while the host acts,
	// so that the guest never stalls on its serial port.
	names := make(chan string, 256)
	go func() {
		defer close(names)
		defer s.log.Close()
		r := bufio.NewReader(io.TeeReader(s.con, s.log))
		for {
			line, err := r.ReadString('\n')
			if name, ok := markerArg(line, waitPrefix); ok && err == nil {
				names <- name
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		s.done <- s.serve(s.ctx, names, onWait)
	}()
}

// serve calls onWait for each request; after a failure it stops the VM
// and drains the rest.
func (s *session) serve(ctx context.Context, names <-chan string, onWait WaitFunc) error {
	var mon *QMP
	var failed error
	for name := range names {
		if failed != nil {
			continue
		}
		if mon == nil {
			q, err := NewQMP(ctx, s.mon)
			if err != nil {
				failed = fmt.Errorf("host action %q: %w", name, err)
				s.cancel()
				continue
			}
			mon = q
		}
		if err := onWait(ctx, name, mon); err != nil {
			failed = fmt.Errorf("host action %q: %w", name, err)
			s.cancel()
			continue
		}
		if _, err := fmt.Fprintf(s.con, "%s %s\n", donePrefix, name); err != nil {
			failed = fmt.Errorf("host action %q: answer the guest: %w", name, err)
			s.cancel()
		}
	}
	return failed
}

// discard releases a session whose qemu did not start.
func (s *session) discard() {
	s.log.Close()
	s.console.Close()
	s.monitor.Close()
	s.con.Close()
	s.mon.Close()
	s.cancel()
}

// wait returns, after qemu ended, the first failure of the host's
// actions.
func (s *session) wait() error {
	err := <-s.done
	s.con.Close()
	s.mon.Close()
	s.cancel()
	return err
}
