package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"kmsagent/agent/errkind"
)

// ErrNoPipe is returned by OpenPipe in a process that was not started by
// Start (an admin typing a hidden command).
var ErrNoPipe = errors.New("no status pipe on fd 3")

// Pipe is the worker's end of the status pipe.
type Pipe struct {
	f     *os.File
	files []int // the descriptors of the files passed after it
}

// fdsEnv names the descriptors of a worker that worker-exec started: the
// status connection's, then the request's files', where they were
// received. They are not moved to 3, 4, ...: in a Go process those
// numbers may be the runtime's own (its epoll descriptor), and a dup2
// over one, even just before exec, can crash it.
const fdsEnv = "KMSAGENT_WORKER_FDS"

// OpenPipe returns the status pipe: fd 3, which Start set up, or the
// descriptor worker-exec named.
func OpenPipe() (*Pipe, error) {
	fds, err := passedFDs()
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fds[0], &st); err != nil {
		return nil, ErrNoPipe
	}
	return &Pipe{f: os.NewFile(uintptr(fds[0]), "status"), files: fds[1:]}, nil
}

// passedFDs reads fdsEnv, once: it is unset, so that a process the
// worker starts does not take it for its own. Without it, the status
// pipe is fd 3 and the files follow.
func passedFDs() ([]int, error) {
	v, ok := os.LookupEnv(fdsEnv)
	if !ok {
		return []int{3, 4, 5, 6, 7, 8, 9, 10, 11}, nil
	}
	os.Unsetenv(fdsEnv)
	var fds []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%s=%q: not a list of descriptors", fdsEnv, v)
		}
		fds = append(fds, n)
	}
	if len(fds) == 0 {
		return nil, ErrNoPipe
	}
	return fds, nil
}

// File returns the i-th file passed to the worker (0: the first after
// the status pipe), or nil if there is none.
func (p *Pipe) File(i int, name string) *os.File {
	if i >= len(p.files) {
		return nil
	}
	return os.NewFile(uintptr(p.files[i]), name)
}

func (p *Pipe) send(m Message) {
	if p == nil || p.f == nil {
		return
	}
	p.f.Write(marshal(m))
}

// marshal is m as one line of the pipe.
func marshal(m Message) []byte {
	b, _ := json.Marshal(m) // plain strings and numbers: cannot fail
	return append(b, '\n')
}

// Step reports the start of a step.
func (p *Pipe) Step(name string) { p.send(Message{Step: oneLine(name)}) }

// StepCMK reports the start of a step and the master key it concerns.
func (p *Pipe) StepCMK(name string, cmk CMK) { p.send(Message{Step: oneLine(name), CMK: &cmk}) }

// Warn reports a warning for the parent to pass on; the worker carries
// on.
func (p *Pipe) Warn(msg string) { p.send(Message{Warning: oneLine(msg)}) }

// Done reports ready (err == nil) or the error, once, and closes the
// pipe. step, when err says which step failed, is given by stepOf.
func (p *Pipe) Done(err error, stepOf func(error) (step string, rest error)) {
	p.finish(nil, err, stepOf, nil)
}

// Finish reports the outcome of a service worker, once, and closes the
// pipe: ready with result, or err, and cmk when a master key was
// involved (the parent audits its use either way).
func (p *Pipe) Finish(result any, err error, cmk *CMK) {
	p.finish(result, err, nil, cmk)
}

// finish is Done and Finish: an error carries its code, its errkind word
// and, with stepOf, the step that failed.
func (p *Pipe) finish(result any, err error, stepOf func(error) (string, error), cmk *CMK) {
	if p == nil || p.f == nil {
		return
	}
	m := Message{CMK: cmk}
	if err == nil {
		m.Ready, m.PID = true, os.Getpid()
	} else {
		m.Error = &Error{Code: CodeOf(err), Kind: errkind.Of(err), Message: oneLine(err.Error())}
		if stepOf != nil {
			if step, rest := stepOf(err); step != "" {
				m.Error.Step, m.Error.Message = step, oneLine(rest.Error())
			}
		}
	}
	if result != nil {
		b, jerr := json.Marshal(result)
		if jerr != nil && err == nil {
			m.Ready, m.Error = false, &Error{Code: CodeOther, Message: "encode the result: " + jerr.Error()}
		}
		m.Result = b
	}
	p.send(m)
	p.f.Close()
	p.f = nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Harden is the first thing a worker does, before it holds a key: no
// core dumps and no ptrace by other users, and all its memory locked,
// since the keys derived from the master key (AES round keys, the name
// cipher) live on the Go heap, which could otherwise be swapped out. It
// returns why memory could not be locked; the worker runs on regardless.
func Harden() error {
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
