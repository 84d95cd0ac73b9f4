package tstest

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Notifier stands in for systemd's notification socket, so a test waits
// for the READY=1 a service sends when it serves (and again after a
// reload) instead of probing it until it answers.
type Notifier struct {
	conn *net.UnixConn
}

// NotifySocket listens on a new notification socket and points
// NOTIFY_SOCKET at it for the rest of the test. As it sets the
// environment, the test must not run in parallel with others.
func NotifySocket(t testing.TB) *Notifier {
	t.Helper()
	dir, err := os.MkdirTemp("", "notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// A short path of its own: socket addresses hold at most 107 bytes,
	// which a test's TempDir can exceed.
	path := filepath.Join(dir, "sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &Notifier{conn: conn}
}

// Wait waits up to timeout for a notification that holds the line state
// ("READY=1"); notifications without it are passed over.
func (n *Notifier) Wait(t testing.TB, timeout time.Duration, state string) {
	t.Helper()
	if err := n.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		k, err := n.conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no %s notification within %v", state, timeout)
		}
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		for line := range strings.SplitSeq(string(buf[:k]), "\n") {
			if line == state {
				return
			}
		}
	}
}
