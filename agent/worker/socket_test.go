package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
)

// playExec is the worker socket's side, as kmsagent worker-exec runs it
// under systemd: the test binary re-executes itself as the worker, the
// part named by the request's last argument.
func playExec() int {
	self, err := os.Executable()
	if err != nil {
		return 3
	}
	os.Unsetenv("KMSAGENT_TEST_EXEC")
	// As in the real binary, the runtime's poller is up before the
	// request is read: its epoll descriptor and an os.Pipe take the low
	// numbers, which ServeExec must not move anything onto.
	pr, pw, err := os.Pipe()
	if err != nil {
		return 3
	}
	defer pr.Close()
	defer pw.Close()
	time.AfterFunc(time.Hour, func() {})
	allowed := func(args []string) error {
		if len(args) != 2 || args[0] != "-test.run=^$" {
			return errors.New("not a test worker")
		}
		return os.Setenv("KMSAGENT_TEST_WORKER", args[1])
	}
	ServeExec(os.Stdin, self, allowed)
	return 1
}

// workerSocket serves a worker socket for the test, the way systemd's
// Accept=yes socket does, and returns its path.
func workerSocket(t *testing.T) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "worker.sock")
	tstest.WorkerSocket(t, path, []string{"KMSAGENT_TEST_EXEC=1"}, self)
	return path
}

func startSocketPart(t *testing.T, socket, part string, files ...*os.File) (*Proc, error) {
	return Start(Command{What: "test worker", Socket: socket, Args: []string{"-test.run=^$", part}, Files: files})
}

// TestSocketStart: a worker started through the worker socket reports
// over the connection as a child does over its pipe.
func TestSocketStart(t *testing.T) {
	ctx := context.Background()
	socket := workerSocket(t)
	t.Run("ready", func(t *testing.T) {
		p, err := startSocketPart(t, socket, "ready")
		if err != nil {
			t.Fatal(err)
		}
		if p.PID() == os.Getpid() || p.PID() <= 0 {
			t.Fatalf("PID %d", p.PID())
		}
		var steps []string
		m, err := p.WaitReady(ctx, time.Minute, func(m Message) {
			if m.Step != "" {
				steps = append(steps, m.Step)
			}
		})
		if err != nil || !m.Ready || m.PID != p.PID() {
			t.Fatalf("WaitReady: %+v, %v; want ready from pid %d", m, err, p.PID())
		}
		if len(steps) != 1 || steps[0] != "kms" {
			t.Fatalf("steps %q", steps)
		}
		select {
		case <-p.Done():
		case <-time.After(time.Minute):
			t.Fatal("Done not closed after the worker exited")
		}
	})
	t.Run("typed error", func(t *testing.T) {
		p, err := startSocketPart(t, socket, "key-disabled")
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.WaitReady(ctx, time.Minute, nil)
		var we *Error
		if !errors.Is(err, kmsclient.ErrKeyDisabled) || !errors.As(err, &we) || we.Step != "kms" {
			t.Fatalf("WaitReady: %#v; want a key-disabled error of step kms", err)
		}
	})
	t.Run("died", func(t *testing.T) {
		p, err := startSocketPart(t, socket, "die")
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.WaitReady(ctx, time.Minute, nil)
		var died *DiedError
		if !errors.As(err, &died) || died.Step != "keyslot" {
			t.Fatalf("WaitReady: %v; want a DiedError after step keyslot", err)
		}
	})
	t.Run("files", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		p, err := startSocketPart(t, socket, "file", w)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitReady(ctx, time.Minute, nil); err != nil {
			t.Fatal(err)
		}
		<-p.Done()
		b := make([]byte, 100)
		n, _ := r.Read(b)
		if got := string(b[:n]); got != "hello from the worker" {
			t.Fatalf("passed file got %q", got)
		}
	})
	t.Run("killed on timeout", func(t *testing.T) {
		p, err := startSocketPart(t, socket, "hang")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitReady(ctx, 500*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("WaitReady: %v; want a timeout", err)
		}
		select {
		case <-p.Done():
		default:
			t.Fatal("worker still running after Kill")
		}
	})
	t.Run("refused command", func(t *testing.T) {
		_, err := Start(Command{What: "test worker", Socket: socket, Args: []string{"/bin/sh", "-c", "id"}})
		if err == nil || !strings.Contains(err.Error(), "not a test worker") {
			t.Fatalf("Start: %v; want the command refused", err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		_, err := Start(Command{What: "test worker", Socket: filepath.Join(t.TempDir(), "none.sock"), Args: []string{"-test.run=^$", "ready"}})
		if err == nil || !strings.Contains(err.Error(), "kmsagent-worker.socket") {
			t.Fatalf("Start: %v; want a hint at the socket unit", err)
		}
	})
}

// TestSocketRefusesOtherUsers: a caller that is not root is refused by
// worker-exec itself, even on a socket whose file mode lets it connect.
func TestSocketRefusesOtherUsers(t *testing.T) {
	tstest.NeedRoot(t, "connects as another user")
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The socket's inode, linked where any user can reach it, and
	// opened to all.
	open := filepath.Join(dir, "open.sock")
	if err := os.Link(workerSocket(t), open); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	conn, err := tstest.DialAs(open, &tstest.Creds{UID: 65534, GID: 65534})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(`{"args":["-test.run=^$","ready"]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	answer, _ := io.ReadAll(conn)
	m, err := ParseMessage(bytes.TrimSpace(answer))
	if err != nil || m.Error == nil || !strings.Contains(m.Error.Message, "only root starts workers") || m.PID != 0 {
		t.Fatalf("answer to uid 65534: %q; want a refusal", answer)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"args":["fuse-worker","--","/a","/b"]}` + "\n"))
	f.Add([]byte(`{"args":[]}`))
	f.Add([]byte(`{"args":["a"],"x":1}`))
	f.Add([]byte(`{"args":["a"]}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		args, err := ParseRequest(b)
		if err == nil && len(args) == 0 {
			t.Fatal("an empty command line accepted")
		}
	})
}

func TestAllowCommands(t *testing.T) {
	allow := AllowCommands("fuse-worker", "luks-worker")
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"fuse-worker", "--", "/a", "/b"}, true},
		{[]string{"--config", "/etc/x.toml", "luks-worker", "/dev/vdb"}, true},
		{[]string{"--config=/etc/x.toml", "fuse-worker"}, true},
		{[]string{"--config", "fuse-worker"}, false}, // fuse-worker is the flag's value
		{[]string{"run"}, false},
		{[]string{"kms", "serve"}, false},
		{[]string{"--config"}, false},
		{nil, false},
	} {
		if err := allow(tc.args); (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}
