package control

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root to connect with other credentials, and CI=true forbids skipping")
	}
	t.Skip("needs root to connect with other credentials")
}

// creds are the credentials a test connection is made with.
type creds struct {
	uid, gid int
	groups   []int
}

// dialAs connects to the unix socket path with c as the credentials of
// the connecting thread only (raw syscalls change one thread, unlike
// syscall.Setuid), so the kernel records them for SO_PEERCRED and
// SO_PEERGROUPS. The thread stays locked: it ends with the goroutine
// instead of running other code with those credentials.
func dialAs(path string, c *creds) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if c != nil {
			groups := make([]uint32, len(c.groups)+1)
			for i, g := range c.groups {
				groups[i] = uint32(g)
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(c.groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
				ch <- result{err: fmt.Errorf("setgroups: %w", e)}
				return
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(c.gid), uintptr(c.gid), uintptr(c.gid)); e != 0 {
				ch <- result{err: fmt.Errorf("setresgid: %w", e)}
				return
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(c.uid), uintptr(c.uid), uintptr(c.uid)); e != 0 {
				ch <- result{err: fmt.Errorf("setresuid: %w", e)}
				return
			}
		}
		conn, err := net.Dial("unix", path)
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// clientAs is a Client whose connections are made with c.
func clientAs(path string, c *creds) *Client {
	return &Client{socket: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dialAs(path, c) },
	}}}
}
