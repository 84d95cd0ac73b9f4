package dm_test

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/xts"

	"kmsagent/blockdev/vmtest"
)

// guestTests are the tests of guest_test.go, run inside the VM.
var guestTests = []string{
	"TestGuestCryptLifecycle",
	"TestGuestLoadNeedsKeyOnSameThread",
	"TestGuestBusyRemove",
	"TestGuestDeactivate",
	"TestGuestSecureDataWipesBuffer",
}

// TestVMDeviceMapper boots a VM with this package's test binary and two
// disks and runs the guest tests there: dm-crypt over /dev/vda with a
// keyring key, then busy/deferred remove and Deactivate on /dev/vdb.
// Afterwards it decrypts /dev/vda's image here with x/crypto/xts and the
// same key and compares it with the pattern the VM wrote.
func TestVMDeviceMapper(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t) // before the build, which is wasted when the VM cannot run
	bin := vmtest.BuildTest(t, ".")
	dir := t.TempDir()
	disks := []string{filepath.Join(dir, "vda.img"), filepath.Join(dir, "vdb.img")}
	for _, d := range disks {
		if err := os.WriteFile(d, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(d, diskBytes); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 64)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}

	res := vmtest.Run(t, vmtest.Config{
		Binaries: map[string]string{"/bin/dm.test": bin},
		Files:    map[string][]byte{keyPath: key},
		Disks:    disks,
		Script:   "/bin/dm.test -test.run '^TestGuest' -test.v -test.count=1",
	})
	res.RequireSuccess(t, guestTests...)
	for _, name := range []string{"dm-version", "table", "table-after-wipe"} {
		if v, ok := res.Data(name); ok {
			t.Logf("guest %s: %s", name, v)
		}
	}

	img, err := os.ReadFile(disks[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, sector)
	for n := uint64(0); n < diskBytes/sector; n++ {
		ct := img[n*sector : (n+1)*sector]
		want := pattern(n)
		if bytes.Equal(ct, want) {
			t.Fatalf("sector %d holds plaintext on disk", n)
		}
		// aes-xts-plain64: the tweak is the 512-byte sector number,
		// little-endian, which is what x/crypto/xts takes.
		c.Decrypt(plain, ct, n)
		if !bytes.Equal(plain, want) {
			t.Fatalf("sector %d does not decrypt to the pattern the VM wrote", n)
		}
	}
}
