package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command is a worker to start.
type Command struct {
	What       string   // "mount worker", for messages
	Executable string   // the kmsagent binary
	Args       []string // after the binary's name
	// Detach starts the worker in its own session, to outlive its
	// parent (a share worker started by the CLI); otherwise it dies with
	// the parent (Pdeathsig), so an interrupted command cannot finish
	// behind its back.
	Detach bool
	// Files are passed on as fd 4, 5, ...: what the worker works on
	// without reopening it (a client's connection to write a key to).
	Files []*os.File
	// Socket, when set, is the worker socket to start the worker
	// through (see socket.go) instead of executing it as a child; the
	// worker then runs outside this process's namespaces and cgroup,
	// and Executable and Detach do not apply.
	Socket string
}

// Proc is a started worker, seen from its parent.
type Proc struct {
	what   string
	pid    int
	kill   func()
	status *os.File
	done   chan struct{}
	err    error // of Wait, once done is closed
}

// Start starts c with the write end of the status pipe as fd 3.
func Start(c Command) (*Proc, error) {
	if c.Socket != "" {
		return startSocket(c)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.Executable, c.Args...)
	cmd.ExtraFiles = append([]*os.File{w}, c.Files...) // fd 3, then Files
	if c.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", c.What, err)
	}
	w.Close()
	p := &Proc{what: c.What, pid: cmd.Process.Pid, kill: func() { cmd.Process.Kill() }, status: r, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the worker's process ID.
func (p *Proc) PID() int { return p.pid }

// Done is closed when the worker has exited (and was reaped).
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitErr is how the worker exited; valid once Done is closed.
func (p *Proc) ExitErr() error { return p.err }

// Release lets a worker that reports nothing run on its own: the status
// pipe is closed, nothing is waited for.
func (p *Proc) Release() { p.status.Close() }

// Kill kills the worker and waits for it to be gone.
func (p *Proc) Kill() {
	p.kill()
	<-p.done
}

// WaitReady reads status messages until the worker reports ready or an
// error, or exits; onMsg (may be nil) gets every step and warning. On
// timeout or cancellation it kills the worker. The status pipe is closed
// when WaitReady returns. A reported error is an *Error; a worker that
// exited without a word is a *DiedError whose Step is the last step
// reported.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration, onMsg func(Message)) (Message, error) {
	defer p.status.Close()
	msgs := make(chan Message)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(io.LimitReader(p.status, 64<<10))
		for sc.Scan() {
			m, err := ParseMessage(sc.Bytes())
			if err != nil {
				m = Message{Warning: fmt.Sprintf("%s said something unreadable: %q", p.what, sc.Text())}
			}
			select {
			case msgs <- m:
			case <-stop:
				return
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	last := ""
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				<-p.done
				return Message{}, &DiedError{What: p.what, Step: last, Err: p.err}
			}
			switch {
			case m.Ready:
				return m, nil
			case m.Error != nil:
				return m, m.Error
			}
			if m.Step != "" {
				last = m.Step
			}
			if onMsg != nil {
				onMsg(m)
			}
		case <-timer.C:
			p.Kill()
			return Message{}, fmt.Errorf("%s not ready after %v; killed it", p.what, timeout)
		case <-ctx.Done():
			p.Kill()
			return Message{}, ctx.Err()
		}
	}
}

// DiedError is a worker that exited without reporting.
type DiedError struct {
	What string
	Step string // the last step it reported, if any
	Err  error
}

func (e *DiedError) Error() string {
	return fmt.Sprintf("%s exited before it was ready (%v); see the system log", e.What, e.Err)
}

func (e *DiedError) Unwrap() error { return e.Err }

// Watch waits until process pid exits (it may have already), or ctx
// ends. It is for processes that are not this one's children: a worker
// adopted after a daemon restart, the reaper's worker. same, when not
// nil, is asked once the pidfd is open whether pid is still the expected
// process (its start time matches); if not, the process is gone.
func Watch(ctx context.Context, pid int, same func() bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	defer unix.Close(fd)
	// The PID is the expected process's only while its start time
	// matches; checked after the pidfd pins it.
	if same != nil && !same() {
		return nil
	}
	// Poll with a timeout so a cancelled ctx is seen; the exit itself
	// wakes the poll at once.
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 500)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
