package cryptfs

import (
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/fuse/cryptocore"
)

// TestMain doubles as a helper process for operations that must not run
// in the process serving the mount, such as touching mmap'ed pages (a
// page fault on a FUSE file blocks its thread where the Go runtime cannot
// see it, and a garbage collection would then wait forever).
func TestMain(m *testing.M) {
	if h := os.Getenv("CRYPTFS_TEST_HELPER"); h != "" {
		os.Exit(runHelper(h, os.Getenv("CRYPTFS_TEST_PATH")))
	}
	os.Exit(m.Run())
}

// runHelperProcess runs this test binary as helper h on path.
func runHelperProcess(t testing.TB, h, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRYPTFS_TEST_HELPER="+h, "CRYPTFS_TEST_PATH="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s: %v\n%s", h, err, out)
	}
}

// testKey is a master key with its hex form for gocryptfs -masterkey.
type testKey struct {
	key  *secret.Key
	hex  string
	core *cryptocore.CryptoCore
}

func newTestKey(t testing.TB) *testKey {
	t.Helper()
	k, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	return keyFrom(t, k)
}

func keyFrom(t testing.TB, k *secret.Key) *testKey {
	t.Helper()
	core, err := cryptocore.New(k)
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{key: k, hex: hex.EncodeToString(k.Bytes()), core: core}
}

// newCipherDir makes an initialised, empty cipher directory.
func newCipherDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cipher")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := InitDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testMount is a mounted file system.
type testMount struct {
	cipher, mnt string
	server      *Server
	logs        *tstest.Buffer
	once        sync.Once
}

func mountFS(t testing.TB, cipher string, k *testKey, opts Options, mo MountOptions) *testMount {
	t.Helper()
	tstest.NeedFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logs := &tstest.Buffer{}
	opts.CipherDir = cipher
	opts.Core = k.core
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	root, err := NewRoot(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(mnt, root, mo)
	if err != nil {
		t.Fatal(err)
	}
	m := &testMount{cipher: cipher, mnt: mnt, server: srv, logs: logs}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// newFS mounts a fresh cipher directory with default options.
func newFS(t testing.TB) (*testMount, *testKey) {
	t.Helper()
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	return mountFS(t, newCipherDir(t), k, Options{}, MountOptions{}), k
}

func (m *testMount) path(p ...string) string { return filepath.Join(append([]string{m.mnt}, p...)...) }

// unmount unmounts, falling back to fusermount3 and a lazy unmount, and
// waits for the server to stop.
func (m *testMount) unmount(t testing.TB) {
	m.once.Do(func() {
		// The kernel releases the mount's last files asynchronously, and
		// until then the unmount fails with EBUSY.
		var err error
		tstest.Poll(time.Second, func() bool { err = m.server.Unmount(); return err == nil })
		if err != nil {
			t.Logf("unmount %s: %v; trying fusermount3 and a lazy unmount", m.mnt, err)
			if out, err2 := exec.Command("fusermount3", "-u", m.mnt).CombinedOutput(); err2 != nil {
				t.Logf("fusermount3 -u: %v: %s", err2, out)
				if err3 := unix.Unmount(m.mnt, unix.MNT_DETACH); err3 != nil {
					t.Errorf("lazy unmount %s: %v", m.mnt, err3)
				}
			}
		}
		done := make(chan struct{})
		go func() { m.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("server for %s did not stop", m.mnt)
		}
	})
}

// cipherFiles lists the regular files of the cipher tree below dir,
// leaving out diriv and .name files.
func cipherFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		if d.Type().IsRegular() && n != "gocryptfs.diriv" && !strings.HasSuffix(n, ".name") && n != "gocryptfs.conf" {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
