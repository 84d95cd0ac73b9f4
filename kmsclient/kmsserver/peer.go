package kmsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peer is the process at the other end of a unix socket connection, as
// the kernel recorded it at connect().
type peer struct {
	pid, uid, gid int
	groups        []int // supplementary groups; nil when the kernel cannot tell
	err           error // why the credentials could not be read
}

func (p *peer) String() string {
	return fmt.Sprintf("pid=%d uid=%d", p.pid, p.uid)
}

// allowed: root, or a member of group (primary or supplementary) when
// group is positive.
func (p *peer) allowed(group int) bool {
	if p.err != nil {
		return false
	}
	return p.uid == 0 || group > 0 && (p.gid == group || slices.Contains(p.groups, group))
}

func (p *peer) refusal(group int) string {
	if p.err != nil {
		return "cannot read the credentials of the connecting process: " + p.err.Error()
	}
	if group <= 0 {
		return fmt.Sprintf("uid %d may not use this socket: only root may", p.uid)
	}
	return fmt.Sprintf("uid %d may not use this socket: only root and members of group %d may", p.uid, group)
}

type peerKey struct{}

func withPeer(ctx context.Context, p *peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	return p
}

// peerOf reads SO_PEERCRED and SO_PEERGROUPS of c. Both are the
// credentials of the peer when it connected, kept by the kernel with the
// socket: nothing is looked up later by pid, where the process may have
// exited, re-executed or changed its groups.
func peerOf(c *net.UnixConn) *peer {
	p := &peer{pid: -1, uid: -1, gid: -1}
	raw, err := c.SyscallConn()
	if err != nil {
		p.err = err
		return p
	}
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.pid, p.uid, p.gid = int(cred.Pid), int(cred.Uid), int(cred.Gid)
		p.groups, err = peerGroups(int(fd))
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
			// Without SO_PEERGROUPS (Linux < 4.13) only the primary
			// group counts; any other failure refuses the peer.
			p.err = fmt.Errorf("SO_PEERGROUPS: %w", err)
		}
	})
	if cerr != nil && p.err == nil {
		p.err = cerr
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
