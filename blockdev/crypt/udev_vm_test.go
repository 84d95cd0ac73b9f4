package crypt_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/vmtest"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient/local"
)

// Shared by TestVMUdev and the guest test it runs.
const (
	udevFSUUID  = "5b0e7c1d-2f4a-4d3b-9c8e-7a6b5c4d3e2f" // the ext4 file system's uuid
	udevFSLabel = "kmsudev"
)

// TestVMUdev boots VMs that run Debian's udevd. With the device-mapper
// rules of the dmsetup package (and dmsetup, which they call) and
// systemd's block rules, TestGuestUdevLinks checks that a volume opened
// by this package gets its /dev/mapper and /dev/disk links, and the udev
// properties systemd needs for dev-mapper-<name>.device, by the time Open
// returns, and loses them by the time Close returns. Without the dm rules
// (no dmsetup installed), TestGuestUdevWithoutDMRules checks that nothing
// waits for a notification that cannot come.
func TestVMUdev(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t)
	tstest.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	ctx := context.Background()
	dir := t.TempDir()
	kmsDir := filepath.Join(dir, "kms")
	store, err := local.Open(kmsDir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.CreateKey(ctx, "vmtest", "")
	if err != nil {
		t.Fatal(err)
	}
	vda := filepath.Join(dir, "vda.img")
	if err := os.WriteFile(vda, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vda, diskBytes); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(vda, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = volume.Format(ctx, f, store, volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: key.ID}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	seg, vk := segmentAndKey(t, vda, store)
	fsImg := filepath.Join(dir, "fs.img")
	fsSize := int64(diskBytes) - int64(seg.Offset)
	fsSize -= fsSize % int64(seg.SectorSize)
	if err := os.WriteFile(fsImg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fsImg, fsSize); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-U", udevFSUUID, "-L", udevFSLabel, fsImg).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	plain, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}
	writePayload(t, vda, seg, vk, plain)

	bin := vmtest.BuildTest(t, ".")
	for _, c := range []struct {
		name    string
		dmsetup bool
		rules   []string
		guest   string
	}{
		{"dmsetup rules", true, []string{"55-dm.rules", "60-persistent-storage-dm.rules", "95-dm-notify.rules", "99-systemd.rules"}, "TestGuestUdevLinks"},
		{"no dm rules", false, []string{"99-systemd.rules"}, "TestGuestUdevWithoutDMRules"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg vmtest.Config
			if c.dmsetup {
				vmtest.AddHostProgram(t, &cfg, "/sbin/dmsetup", "dmsetup")
			}
			script := vmtest.AddUdev(t, &cfg, c.rules...)
			cfg.Binaries["/bin/crypt.test"] = bin
			for p, b := range guestKMSFiles(t, kmsDir, key.ID) {
				cfg.Files[p] = b
			}
			disk := filepath.Join(t.TempDir(), "vda.img")
			img, err := os.ReadFile(vda)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(disk, img, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Disks = []string{disk}
			cfg.Script = script + "chmod 700 " + guestKMSDir + "; /bin/crypt.test -test.run '^" + c.guest + "$' -test.v -test.count=1"
			cfg.Timeout = 120e9
			res := vmtest.Run(t, cfg)
			for _, m := range res.Markers {
				if m.Kind == "DATA" {
					t.Logf("guest %s: %s", m.Name, m.Detail)
				}
			}
			res.RequireSuccess(t, c.guest)
		})
	}
}
