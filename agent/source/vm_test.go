package source

import (
	"os"
	"path/filepath"
	"testing"

	"kmsagent/blockdev/vmtest"
)

// TestVMVirtioSerial boots a VM without udev whose virtio disks have EVS
// volume ids as serial numbers, as Huawei Cloud's hypervisor gives them,
// and runs the guest tests there: the serial attribute of a real
// virtio-blk disk, a LUKS2 header found by scanning a real kernel's block
// devices, and a disk hot-plugged while a uevent listener waits.
func TestVMVirtioSerial(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t)
	dir := t.TempDir()
	diskA, diskB := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	hdr := luksHeader(t, uuidA)
	if err := os.WriteFile(diskA, append(hdr, make([]byte, 2<<20-len(hdr))...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(diskB, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	res := vmtest.Run(t, vmtest.Config{
		Binaries: map[string]string{"/bin/source.test": vmtest.BuildTest(t, ".")},
		Disks:    []string{diskA, diskB},
		// The whole id: the hypervisor keeps what fits, 20 bytes.
		Serials: []string{volA, volB},
		Script:  "/bin/source.test -test.run '^TestGuest' -test.v -test.count=1",
	})
	res.RequireSuccess(t, "TestGuestVirtio", "TestGuestHotplug")
	if s, ok := res.Data("hotplug-add"); ok {
		t.Logf("hot-plugged disk came back as %s (name, seqnum)", s)
	}
	if s, _ := res.Data("vda-serial"); s != volA[:SerialLen] {
		t.Errorf("the guest's /sys/class/block/vda/serial is %q, want %q", s, volA[:SerialLen])
	}
}
