package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Workers are this binary re-executed with a hidden command. They report
// to the command that started them over a pipe on fd 3, one line each:
// "step <name>" as they go and "warning <message>" (both optional), then
// "ready" or "error: <message>". Warnings are printed by the starting
// command, which is where an admin who mounts by hand looks.

// workerProc is a started worker, seen from the command that started it.
type workerProc struct {
	what   string // "mount worker", for messages
	stderr io.Writer
	cmd    *exec.Cmd
	status *os.File
	exited chan error
}

// startWorkerProcess starts `kmsagent [--config F] command args...` with
// the write end of the status pipe as fd 3.
func startWorkerProcess(env *cliEnv, what, command string, args []string, attr *syscall.SysProcAttr) (*workerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var wargs []string
	if env.configFlag != "" {
		wargs = append(wargs, "--config", env.configFlag)
	}
	wargs = append(wargs, command)
	wargs = append(wargs, args...)
	cmd := exec.Command(self, wargs...)
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = attr
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	w.Close()
	p := &workerProc{what: what, stderr: env.stderr, cmd: cmd, status: r, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	return p, nil
}

// wait reads status lines until the worker reports ready or an error, or
// exits; onStep gets each step. On timeout or cancellation it kills the
// worker. The status pipe is closed when wait returns.
func (p *workerProc) wait(ctx context.Context, timeout time.Duration, onStep func(string)) error {
	defer p.status.Close()
	lines := make(chan string)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(io.LimitReader(p.status, 64<<10))
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-done:
				return
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				err := <-p.exited
				return &workerDiedError{what: p.what, err: err}
			}
			if line == "ready" {
				return nil
			}
			if msg, ok := strings.CutPrefix(line, "error: "); ok {
				return errors.New(msg)
			}
			if msg, ok := strings.CutPrefix(line, "warning "); ok {
				fmt.Fprintf(p.stderr, "kmsagent: warning: %s\n", msg)
			}
			if step, ok := strings.CutPrefix(line, "step "); ok && onStep != nil {
				onStep(step)
			}
		case <-timer.C:
			p.cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("%s not ready after %v; killed it", p.what, timeout)
		case <-ctx.Done():
			p.cmd.Process.Kill()
			<-p.exited
			return ctx.Err()
		}
	}
}

// workerDiedError is a worker that exited without reporting.
type workerDiedError struct {
	what string
	err  error
}

func (e *workerDiedError) Error() string {
	return fmt.Sprintf("%s exited before it was ready (%v); see the system log", e.what, e.err)
}

// statusPipe is the worker's end of the status pipe.
type statusPipe struct{ f *os.File }

// openStatusPipe returns fd 3, which the starting command set up.
func openStatusPipe(command, startedBy string) (*statusPipe, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(3, &st); err != nil {
		return nil, fmt.Errorf("%s is started by %s", command, startedBy)
	}
	return &statusPipe{f: os.NewFile(3, "status")}, nil
}

// step reports the start of a step.
func (s *statusPipe) step(name string) {
	if s.f != nil {
		fmt.Fprintf(s.f, "step %s\n", oneLine(name))
	}
}

// done reports ready (err == nil) or the error, once, and closes the
// pipe.
func (s *statusPipe) done(err error) {
	if s.f == nil {
		return
	}
	if err == nil {
		fmt.Fprintln(s.f, "ready")
	} else {
		fmt.Fprintln(s.f, "error: "+oneLine(err.Error()))
	}
	s.f.Close()
	s.f = nil
}

// warn reports a warning for the starting command to print; the worker
// carries on.
func (s *statusPipe) warn(msg string) {
	if s.f != nil {
		fmt.Fprintf(s.f, "warning %s\n", oneLine(msg))
	}
}

// hardenWorker is the first thing a worker does, before it holds a key:
// no core dumps and no ptrace by other users, and all its memory locked,
// since the keys derived from the master key (AES round keys, the name
// cipher) live on the Go heap, which could otherwise be swapped out. It
// returns why memory could not be locked; the worker runs on regardless.
func hardenWorker() error {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	return lockMemory()
}

// lockMemory locks the process's memory, now and as it grows.
//
// MCL_ONFAULT locks pages as they are first touched: without it
// MCL_FUTURE would populate in full every range the Go runtime maps
// (heap arenas, goroutine stacks), and the resident size would balloon.
// Locked memory counts against RLIMIT_MEMLOCK by mapping size, and Go
// maps far more than it touches; under a finite limit a later heap growth
// would fail and the runtime would abort with the mount still up. So
// memory is locked only where the limit cannot be hit: with
// CAP_IPC_LOCK (root, unless the unit drops it) or an unlimited limit.
func lockMemory() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("memory not locked, keys may be swapped out: RLIMIT_MEMLOCK: %w", err)
	}
	if lim.Cur != unix.RLIM_INFINITY && !hasCapability(unix.CAP_IPC_LOCK) {
		return fmt.Errorf("memory not locked, keys may be swapped out: RLIMIT_MEMLOCK is %d KiB and the worker lacks CAP_IPC_LOCK; set LimitMEMLOCK=infinity in the service unit or run ulimit -l unlimited before mounting", lim.Cur/1024)
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		return fmt.Errorf("memory not locked, keys may be swapped out: mlockall: %w (RLIMIT_MEMLOCK: LimitMEMLOCK= in the service unit, ulimit -l)", err)
	}
	return nil
}

// hasCapability reports whether capability c is in the effective set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}
