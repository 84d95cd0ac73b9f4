package luks2

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
)

// testdata holds cryptsetup's own test images (see its README).
const testdata = "testdata/cryptsetup"

// unxz decompresses a test image into a temporary directory.
func unxz(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join(testdata, name)
	if _, err := os.Stat(src); err != nil {
		tstest.Unavailable(t, "cryptsetup's test image is not in testdata/cryptsetup: %v", err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(name[:len(name)-len(".xz")]))
	data, err := exec.Command("xz", "-dc", src).Output()
	if err != nil {
		t.Fatalf("xz -dc %s: %v", src, err)
	}
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// untarxz unpacks a tar.xz into a temporary directory.
func untarxz(t testing.TB, name string) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		tstest.Unavailable(t, "cryptsetup's test archive is not in testdata/cryptsetup: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("tar", "-xJf", src)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -xJf %s: %v\n%s", src, err, out)
	}
	return dir
}

func openFile(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readHeader(t testing.TB, f *os.File) *Header {
	t.Helper()
	h, err := Read(f)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return h
}

func hexKey(t testing.TB, s string) *secret.Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	k, err := secret.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// memDevice is an in-memory image for tests that need no cryptsetup.
type memDevice struct {
	data  []byte
	syncs int
}

func newMemDevice(size int) *memDevice { return &memDevice{data: make([]byte, size)} }

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, os.ErrInvalid
	}
	return copy(p, m.data[off:]), nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, os.ErrInvalid
	}
	if end := int(off) + len(p); end > len(m.data) {
		m.data = append(m.data, make([]byte, end-len(m.data))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *memDevice) Sync() error { m.syncs++; return nil }

// Cheap KDFs so that tests stay fast; still at cryptsetup's minimums.
var (
	fastPBKDF2   = KDF{Type: KDFPBKDF2, Hash: "sha256", Iterations: 1000}
	fastArgon2id = KDF{Type: KDFArgon2id, Time: 4, MemoryKiB: 4096, CPUs: 1}
)
