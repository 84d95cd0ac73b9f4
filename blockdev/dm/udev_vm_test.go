package dm_test

import (
	"os"
	"path/filepath"
	"testing"

	"kmsagent/blockdev/vmtest"
)

// TestVMUdevStuck boots a VM whose udevd has a 95-dm-notify.rules that
// never completes a cookie, as when udevd hangs or runs in another IPC
// namespace, and runs TestGuestUdevStuck there: Activate gives up after
// the udev timeout and leaves no device, node or semaphore behind.
func TestVMUdevStuck(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t)
	var cfg vmtest.Config
	script := vmtest.AddUdev(t, &cfg)
	cfg.Files["/lib/udev/rules.d/95-dm-notify.rules"] = []byte("# installed, but completes nothing\n")
	cfg.Binaries["/bin/dm.test"] = vmtest.BuildTest(t, ".")
	disk := filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, diskBytes); err != nil {
		t.Fatal(err)
	}
	cfg.Disks = []string{disk}
	cfg.Script = script + "/bin/dm.test -test.run '^TestGuestUdevStuck$' -test.v -test.count=1"
	res := vmtest.Run(t, cfg)
	res.RequireSuccess(t, "TestGuestUdevStuck")
	if v, ok := res.Data("udev-stuck"); ok {
		t.Logf("guest error: %s", v)
	}
}
