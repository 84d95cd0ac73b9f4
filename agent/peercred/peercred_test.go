package peercred

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"kmsagent/agent/tstest"
)

func TestAllowed(t *testing.T) {
	const g = 4242
	tests := []struct {
		name  string
		p     Peer
		group int
		want  bool
	}{
		{"root", Peer{UID: 0, GID: 0}, 0, true},
		{"root, group set", Peer{UID: 0, GID: 0}, g, true},
		{"other, root only", Peer{UID: 1000, GID: g}, 0, false},
		{"primary group", Peer{UID: 1000, GID: g}, g, true},
		{"supplementary group", Peer{UID: 1000, GID: 1000, Groups: []int{10, g}}, g, true},
		{"other groups", Peer{UID: 1000, GID: 1000, Groups: []int{10}}, g, false},
		{"unreadable", Peer{UID: 0, Err: errors.New("x")}, g, false},
	}
	for _, tc := range tests {
		if got := tc.p.Allowed(tc.group); got != tc.want {
			t.Errorf("%s: Allowed = %v, want %v (%s)", tc.name, got, tc.want, tc.p.Refusal(tc.group))
		}
	}
}

// TestListen checks the modes of a new directory and socket, that a
// stale socket is replaced and a live one refused, and that the peer of
// a connection is this process.
func TestListen(t *testing.T) {
	tstest.NeedRoot(t, "to chown the socket")
	for _, group := range []int{0, 4242} {
		path := filepath.Join(t.TempDir(), "run", "x.sock")
		ln, err := Listen(path, group)
		if err != nil {
			t.Fatal(err)
		}
		wantDir, wantSock := os.FileMode(0o750), os.FileMode(0o600)
		if group > 0 {
			wantSock = 0o660
		}
		for p, want := range map[string]os.FileMode{filepath.Dir(path): wantDir, path: wantSock} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != want || int(st.Gid) != group {
				t.Errorf("group %d: %s has mode %v gid %d, want %v gid %d", group, p, fi.Mode().Perm(), st.Gid, want, group)
			}
		}
		if _, err := Listen(path, group); err == nil {
			t.Errorf("second Listen on a live socket succeeded")
		}
		go func() {
			c, err := net.Dial("unix", path)
			if err == nil {
				c.Close()
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		p := Of(c.(*net.UnixConn))
		c.Close()
		if p.Err != nil || p.PID != os.Getpid() || p.UID != 0 {
			t.Errorf("peer %v (err %v), want this process as root", p, p.Err)
		}
		// Closing a unix listener removes its file; leave a stale one
		// behind as a crash would.
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		ln, err = Listen(path, group)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		ln.Close()
	}
	// Anything else at the path is left alone, with a message saying so
	// rather than bind's "address already in use".
	regular := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(regular, 0); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if _, err := os.Stat(regular); err != nil {
		t.Errorf("the regular file is gone: %v", err)
	}
}
