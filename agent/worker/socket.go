package worker

// Workers started through a socket.
//
// A daemon confined to a mount namespace of its own (systemd's
// ProtectSystem=, PrivateTmp= and the rest) cannot start a worker whose
// mounts the host sees: every child inherits the namespace, and mounts
// made there never propagate back (systemd.exec(5), PrivateMounts=). So
// under systemd the daemon does not start such workers itself. It
// connects to the worker socket, kmsagent-worker.socket with Accept=yes,
// and systemd starts an instance of kmsagent-worker@.service for the
// connection, outside the daemon's sandbox, with the connection as its
// standard input. That instance runs `kmsagent worker-exec` (ServeExec),
// which reads one request, a command line and the files to pass, checks
// that the command is a worker's, and executes it with the connection as
// its status pipe (fd 3) and the files as fd 4, 5, ... From there on the
// protocol is the one of a worker started directly.
//
// The request is one JSON line, {"args":[...]}, its files attached to its
// first byte as SCM_RIGHTS. The first line back is {"pid":N}: the worker's process
// ID, which the daemon watches through a pidfd (the worker is not its
// child, so there is no exit status: ExitErr says only that it ended).
// Only root may connect (the socket is 0600), and ServeExec also checks
// the caller's credentials.
//
// A worker started this way does not die with the daemon (there is no
// parent death signal across units); an interrupted unlock finishes, and
// the restarted daemon adopts what it opened.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxRequest bounds a request line; maxFiles the files it may carry.
const (
	maxRequest = 64 << 10
	maxFiles   = 8
)

// socketTimeout bounds each side's wait for the other's first words.
const socketTimeout = 30 * time.Second

type launchRequest struct {
	Args []string `json:"args"`
}

// startSocket starts c through the worker socket c.Socket.
func startSocket(c Command) (*Proc, error) {
	if len(c.Files) > maxFiles {
		return nil, fmt.Errorf("start %s: %d files to pass, at most %d", c.What, len(c.Files), maxFiles)
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: c.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("start %s through %s: %w; is kmsagent-worker.socket running (systemctl status kmsagent-worker.socket)?", c.What, c.Socket, err)
	}
	defer conn.Close()
	req, err := json.Marshal(launchRequest{Args: c.Args})
	if err != nil {
		return nil, err
	}
	req = append(req, '\n')
	var oob []byte
	if len(c.Files) > 0 {
		fds := make([]int, len(c.Files))
		for i, f := range c.Files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(req, oob, nil); err != nil {
		return nil, fmt.Errorf("start %s through %s: %w", c.What, c.Socket, err)
	}
	status, err := conn.File()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.What, err)
	}
	first, err := readLine(status, socketTimeout)
	if err != nil {
		status.Close()
		return nil, fmt.Errorf("start %s through %s: no answer: %w; see journalctl -u 'kmsagent-worker@*'", c.What, c.Socket, err)
	}
	m, err := ParseMessage(first)
	switch {
	case err != nil:
		err = fmt.Errorf("unreadable answer %q", first)
	case m.Error != nil:
		err = m.Error
	case m.PID <= 0:
		err = fmt.Errorf("answer without a process ID: %q", first)
	}
	if err != nil {
		status.Close()
		return nil, fmt.Errorf("start %s through %s: %w", c.What, c.Socket, err)
	}
	p := &Proc{what: c.What, pid: m.PID, status: status, done: make(chan struct{})}
	pidfd, err := unix.PidfdOpen(m.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		// Done already: what it said is still on the connection.
		p.kill, p.err = func() {}, errExited
		close(p.done)
		return p, nil
	}
	if err != nil {
		status.Close()
		return nil, fmt.Errorf("start %s: watch pid %d: %w", c.What, m.PID, err)
	}
	// The pidfd is closed once the worker has exited, under mu, so
	// that a late Kill never signals through a number reused since.
	var mu sync.Mutex
	p.kill = func() {
		mu.Lock()
		defer mu.Unlock()
		if pidfd >= 0 {
			unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		}
	}
	go func() {
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, -1)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		mu.Lock()
		unix.Close(pidfd)
		pidfd = -1
		mu.Unlock()
		p.err = errExited
		close(p.done)
	}()
	return p, nil
}

// errExited is the end of a worker that is not a child: its exit status
// went to systemd, not to this process.
var errExited = errors.New("exited; its exit status is in the journal")

// readLine reads one line from f within timeout, a byte at a time: what
// follows it is the status pipe's, read later by WaitReady.
func readLine(f *os.File, timeout time.Duration) ([]byte, error) {
	f.SetReadDeadline(time.Now().Add(timeout))
	defer f.SetReadDeadline(time.Time{})
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		if _, err := f.Read(b); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		line = append(line, b[0])
	}
	return nil, errors.New("answer line too long")
}

// ServeExec is the worker socket's side: conn is the accepted connection
// (standard input of the systemd instance). It reads one request, checks
// the caller is root and allowed accepts its command line, reports the
// process ID and replaces this process with the worker, self re-executed
// with the request's arguments; it returns only on failure, which it
// also reports on conn.
func ServeExec(conn *os.File, self string, allowed func(args []string) error) error {
	err := serveExec(conn, self, allowed)
	if err != nil {
		conn.Write(marshal(Message{Error: &Error{Code: CodeOther, Message: oneLine("worker-exec: " + err.Error())}}))
	}
	return err
}

func serveExec(conn *os.File, self string, allowed func(args []string) error) error {
	fd := int(conn.Fd())
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("standard input is not a connection to the worker socket: %w", err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("caller uid %d refused: only root starts workers", cred.Uid)
	}
	tv := unix.NsecToTimeval(socketTimeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	args, files, err := readRequest(fd)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			unix.Close(f)
		}
	}()
	tv = unix.Timeval{}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := allowed(args); err != nil {
		return err
	}
	if _, err := conn.Write(marshal(Message{PID: os.Getpid()})); err != nil {
		return fmt.Errorf("report to the caller: %w", err)
	}
	// The worker finds the connection and the files where they are
	// (fdsEnv), kept open across exec; nothing is moved onto a number
	// the runtime may hold. Standard input becomes /dev/null: it is not
	// the runtime's (the connection is a blocking descriptor, which it
	// never polls).
	status, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 3)
	if err != nil {
		return err
	}
	fds := []string{strconv.Itoa(status)}
	for _, f := range files {
		if _, err := unix.FcntlInt(uintptr(f), unix.F_SETFD, 0); err != nil {
			return err
		}
		fds = append(fds, strconv.Itoa(f))
	}
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Dup3(null, 0, 0); err != nil {
		return err
	}
	unix.Close(null)
	env := make([]string, 0, len(os.Environ())+1)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LISTEN_") && !strings.HasPrefix(e, "REMOTE_") && !strings.HasPrefix(e, fdsEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, fdsEnv+"="+strings.Join(fds, ","))
	return fmt.Errorf("exec %s: %w", self, unix.Exec(self, append([]string{"kmsagent"}, args...), env))
}

// readRequest reads the request line from the connection fd: the
// command line and the files attached. It reads no further than the
// line's end (the files come with its first byte).
func readRequest(fd int) (args []string, files []int, err error) {
	buf := make([]byte, maxRequest)
	oob := make([]byte, unix.CmsgSpace(maxFiles*4))
	n, oobn, flags, _, err := unix.Recvmsg(fd, buf[:1], oob, unix.MSG_CMSG_CLOEXEC)
	if err == nil && n == 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the request: %w", err)
	}
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, fmt.Errorf("request's files: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			files = append(files, fds...)
		}
	}
	closeAll := func() {
		for _, f := range files {
			unix.Close(f)
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		closeAll()
		return nil, nil, fmt.Errorf("request with more than %d files", maxFiles)
	}
	for buf[n-1] != '\n' {
		if n == len(buf) {
			closeAll()
			return nil, nil, fmt.Errorf("request longer than %d bytes", maxRequest)
		}
		m, err := unix.Read(fd, buf[n:n+1])
		if err == nil && m == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("read the request: %w", err)
		}
		n += m
	}
	args, err = ParseRequest(buf[:n])
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return args, files, nil
}

// ParseRequest decodes a worker socket request.
func ParseRequest(b []byte) ([]string, error) {
	var req launchRequest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return nil, fmt.Errorf("unreadable request: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("unreadable request: data after the request")
	}
	if len(req.Args) == 0 {
		return nil, errors.New("empty command line")
	}
	for _, a := range req.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, errors.New("NUL byte in an argument")
		}
	}
	return req.Args, nil
}

// AllowCommands is the allowed func of ServeExec for a binary whose
// global flags are --config PATH (or --config=PATH) and whose worker
// commands are commands.
func AllowCommands(commands ...string) func(args []string) error {
	return func(args []string) error {
		i := 0
		for i < len(args) {
			switch a := args[i]; {
			case a == "--config" || a == "-config":
				i += 2
				continue
			case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
				i++
				continue
			}
			break
		}
		if i >= len(args) {
			return errors.New("no command in the request")
		}
		for _, c := range commands {
			if args[i] == c {
				return nil
			}
		}
		return fmt.Errorf("%q is not a worker command", args[i])
	}
}
