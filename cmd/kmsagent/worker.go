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
)

// Workers are this binary re-executed with a hidden command. They report
// to the command that started them over a pipe on fd 3, one line each:
// "step <name>" as they go (optional), then "ready" or "error: <message>".

// workerProc is a started worker, seen from the command that started it.
type workerProc struct {
	what   string // "mount worker", for messages
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
	p := &workerProc{what: what, cmd: cmd, status: r, exited: make(chan error, 1)}
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
