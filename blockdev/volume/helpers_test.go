package volume

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/kmsclient/local"
)

// Cheap KDF for recovery keyslots, still at cryptsetup's minimums.
var fastArgon2id = luks2.KDF{Type: luks2.KDFArgon2id, Time: 4, MemoryKiB: 1024, CPUs: 1}

const imageSize = 17 << 20 // 16 MiB header + 1 MiB data

type kmsFixture struct {
	store *local.Store
	key   string
}

func newKMS(t testing.TB) kmsFixture {
	t.Helper()
	s, key := tstest.LocalKMS(t, "disks")
	return kmsFixture{s, key}
}

func (k kmsFixture) newKey(t *testing.T) string {
	t.Helper()
	info, err := k.store.CreateKey(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// newFile makes a sparse file of size bytes and opens it read-write.
func newFile(t testing.TB, size int64) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path, f
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func writePass(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// unboundPass is the passphrase of the unbound keyslot of cryptsetup's
// test image luks2_keyslot_unassigned.img, whose shape cryptsetupUnbound
// copies.
const unboundPass = "93R4P4pIqAH8"

// cryptsetupUnbound makes a volume with cryptsetup: keyslot 0 opens it
// with pass, keyslot 1 is unbound (luksAddKey --unbound) and opens with
// unboundPass.
func cryptsetupUnbound(t *testing.T, pass string) (string, *os.File) {
	t.Helper()
	path, f := newFile(t, imageSize)
	tstest.LuksFormat(t, path, writePass(t, pass))
	tstest.LuksAddUnbound(t, path, writePass(t, unboundPass))
	return path, f
}
