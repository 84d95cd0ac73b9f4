package cryptkey

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/audit"
	"kmsagent/agent/tstest"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient/local"
)

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
	s, keyID := tstest.LocalKMS(t, "disks")
	path := filepath.Join(t.TempDir(), "data.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(imageSize); err != nil {
		t.Fatal(err)
	}
	res, err := volume.Format(ctx, f, s, volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: keyID}})
	if err != nil {
		t.Fatal(err)
	}
	return kmsVolume{store: s, keyID: keyID, path: path, uuid: res.UUID}
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
