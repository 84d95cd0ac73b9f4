// Package peercred identifies the process at the other end of a unix
// socket and opens the sockets that kmsagent's servers (the embedded KMS
// and the agent's control API) listen on.
//
// The credentials are those the kernel recorded at connect() with
// SO_PEERCRED and SO_PEERGROUPS, kept with the socket: nothing is looked
// up later by pid, where the process may have exited, re-executed or
// changed its groups. File modes on the socket keep others from
// connecting at all; the credentials are what a server trusts.
package peercred

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a unix socket connection, as
// the kernel recorded it at connect().
type Peer struct {
	PID, UID, GID int
	Groups        []int // supplementary groups; nil when the kernel cannot tell
	Err           error // why the credentials could not be read
}

func (p *Peer) String() string {
	return fmt.Sprintf("pid=%d uid=%d", p.PID, p.UID)
}

// Allowed reports whether p is root, or a member of group (primary or
// supplementary) when group is positive.
func (p *Peer) Allowed(group int) bool {
	if p.Err != nil {
		return false
	}
	return p.UID == 0 || group > 0 && (p.GID == group || slices.Contains(p.Groups, group))
}

// Refusal says why Allowed is false, in one line.
func (p *Peer) Refusal(group int) string {
	if p.Err != nil {
		return "cannot read the credentials of the connecting process: " + p.Err.Error()
	}
	if group <= 0 {
		return fmt.Sprintf("uid %d may not use this socket: only root may", p.UID)
	}
	return fmt.Sprintf("uid %d may not use this socket: only root and members of group %d may", p.UID, group)
}

type peerKey struct{}

// WithPeer returns ctx carrying p, for http.Server.ConnContext.
func WithPeer(ctx context.Context, p *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// FromContext returns the peer WithPeer stored, or nil (not a unix
// socket).
func FromContext(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// ConnContext is an http.Server.ConnContext that records the peer of
// unix socket connections; unwrap digs the *net.UnixConn out of a
// wrapping net.Conn (nil when there is no wrapping).
func ConnContext(unwrap func(net.Conn) net.Conn) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if unwrap != nil {
			c = unwrap(c)
		}
		if uc, ok := c.(*net.UnixConn); ok {
			return WithPeer(ctx, Of(uc))
		}
		return ctx
	}
}

// Of reads SO_PEERCRED and SO_PEERGROUPS of c.
func Of(c *net.UnixConn) *Peer {
	p := &Peer{PID: -1, UID: -1, GID: -1}
	raw, err := c.SyscallConn()
	if err != nil {
		p.Err = err
		return p
	}
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.Err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.PID, p.UID, p.GID = int(cred.Pid), int(cred.Uid), int(cred.Gid)
		p.Groups, err = peerGroups(int(fd))
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
			// Without SO_PEERGROUPS (Linux < 4.13) only the primary
			// group counts; any other failure refuses the peer.
			p.Err = fmt.Errorf("SO_PEERGROUPS: %w", err)
		}
	})
	if cerr != nil && p.Err == nil {
		p.Err = cerr
	}
	return p
}

// peerGroups reads SO_PEERGROUPS, growing the buffer when the kernel says
// it is too small (ERANGE, with the needed size in optlen).
func peerGroups(fd int) ([]int, error) {
	buf := make([]byte, 64*4)
	for {
		n := uint32(len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == unix.ERANGE && int(n) > len(buf) && n <= 65536*4:
			buf = make([]byte, n)
			continue
		case e != 0:
			return nil, e
		}
		groups := make([]int, 0, n/4)
		for i := 0; i+4 <= int(n); i += 4 {
			groups = append(groups, int(binary.NativeEndian.Uint32(buf[i:])))
		}
		return groups, nil
	}
}

// Listen listens on the unix socket path: its directory is created 0750
// (group-owned by group when there is one), a stale socket left by a
// crash is removed, and the socket gets mode 0660 with the group, or 0600
// (group <= 0). A socket another server still answers on is left alone,
// and so is anything at path that is not a socket. The listener is a
// *net.UnixListener.
func Listen(path string, group int) (net.Listener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
		// Not left to the umask, which may be 077 under systemd.
		if err := os.Chmod(dir, 0o750); err != nil {
			return nil, err
		}
		if group > 0 {
			if err := os.Chown(dir, 0, group); err != nil {
				return nil, err
			}
		}
	}
	switch fi, err := os.Lstat(path); {
	case err == nil && fi.Mode().Type() == fs.ModeSocket:
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another server is listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	case err == nil:
		return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another socket path", path)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	mode := os.FileMode(0o600)
	if group > 0 {
		mode = 0o660
		if err := os.Chown(path, 0, group); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// LookupGroup resolves a group name or number. Group 0 is refused: a
// socket would then be open to whatever else runs with gid 0.
func LookupGroup(name string) (int, error) {
	gid, err := strconv.Atoi(name)
	if err != nil {
		g, lerr := user.LookupGroup(name)
		if lerr != nil {
			return 0, lerr
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return 0, fmt.Errorf("group %s has gid %q", name, g.Gid)
		}
	}
	if gid <= 0 {
		return 0, fmt.Errorf("%q is group 0 or negative; name a dedicated group such as kmsagent, or leave it empty for root only", name)
	}
	return gid, nil
}
