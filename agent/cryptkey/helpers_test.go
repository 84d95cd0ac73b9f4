package cryptkey

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/audit"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient/local"
)

// requireRoot skips a test that needs root, unless CI=true, where a
// missing prerequisite is a failure: CI runs as root and must not pass
// by skipping.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root, and CI=true forbids skipping")
	}
	t.Skip("needs root")
}

func needCryptsetup(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cryptsetup")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cryptsetup (package cryptsetup-bin) is required in CI")
		}
		t.Skip("cryptsetup not installed")
	}
	return path
}

const imageSize = 17 << 20 // 16 MiB header + 1 MiB data

// kmsVolume is an image file formatted as `kmsagent format` does, with
// the embedded local KMS.
type kmsVolume struct {
	store *local.Store
	keyID string
	path  string
	uuid  string
}

func newVolume(t *testing.T) kmsVolume {
	t.Helper()
	ctx := context.Background()
	s, err := local.Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.CreateKey(ctx, "disks", "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "data.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(imageSize); err != nil {
		t.Fatal(err)
	}
	res, err := volume.Format(ctx, f, s, volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: info.ID}})
	if err != nil {
		t.Fatal(err)
	}
	return kmsVolume{store: s, keyID: info.ID, path: path, uuid: res.UUID}
}

// recorder is an Auditor that keeps records in memory.
type recorder struct {
	mu   sync.Mutex
	recs []audit.Record
	err  error // returned by Write, when set
}

func (r *recorder) Write(_ context.Context, rec audit.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.recs = append(r.recs, rec)
	return nil
}

func (r *recorder) records() []audit.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Record(nil), r.recs...)
}

// mapLookup is a Lookup from a fixed table.
type mapLookup map[string]string

func (m mapLookup) Lookup(_ context.Context, name string) (string, error) {
	if dev, ok := m[name]; ok {
		return dev, nil
	}
	return "", errors.Join(ErrUnknownVolume, errors.New(name))
}

// countLookup counts the calls of a Lookup.
type countLookup struct {
	next  Lookup
	calls atomic.Int32
}

func (c *countLookup) Lookup(ctx context.Context, name string) (string, error) {
	c.calls.Add(1)
	return c.next.Lookup(ctx, name)
}

// serveTest starts a Server on a fresh socket and returns its path.
func serveTest(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "cryptsetup.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
	})
	return path
}

// readKey does what systemd-cryptsetup does for a key file that is a
// socket: bind to bindName (an abstract address when it starts with @;
// no bind when empty), connect, shut down writing and read to EOF.
func readKey(path, bindName string) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	if bindName != "" {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: bindName}); err != nil {
			return nil, err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, err
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// readKeyAs is readKey from a thread running as uid (real, effective and
// saved). Only that thread changes its credentials: setresuid is called
// raw, not through the runtime, which would change every thread. The
// thread stays locked, so the runtime discards it when the goroutine
// ends.
func readKeyAs(uid int, path, bindName string) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			ch <- result{nil, e}
			return
		}
		b, err := readKey(path, bindName)
		ch <- result{b, err}
	}()
	r := <-ch
	return r.b, r.err
}
