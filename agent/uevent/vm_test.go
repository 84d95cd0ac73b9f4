package uevent

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/vmtest"
)

// guestSerial is the serial of the VM's second disk, an EVS volume id as
// the hypervisor cuts it.
const guestSerial = "0b7c6b2e-7a5d-4c4e-8"

// TestVMUdev boots a VM that runs the host's udevd (Debian's udevadm and
// the libraries it links, with the persistent-storage rules), hot-plugs a
// virtio disk there, and runs TestGuestUdevHotplug: real udevd messages
// parsed and trusted, and the by-id link already made when the event
// arrives, which is why the daemon listens to udev where it runs.
func TestVMUdev(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t)
	udevadm := tstest.NeedTool(t, "udevadm", "udev")
	bins := map[string]string{
		"/bin/uevent.test": vmtest.BuildTest(t, "."),
		"/bin/udevadm":     udevadm,
	}
	out, err := exec.Command("ldd", udevadm).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", udevadm, err)
	}
	// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the
	// loader's "/lib64/ld-linux-x86-64.so.2 (0x...)".
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:\S+ => )?(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		bins[m[1]] = m[1]
	}
	rules, err := os.ReadFile("/lib/udev/rules.d/60-persistent-storage.rules")
	if err != nil {
		t.Skipf("udev's persistent-storage rules: %v", err)
	}
	dir := t.TempDir()
	var disks []string
	for _, name := range []string{"a.img", "b.img"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, p)
	}
	res := vmtest.Run(t, vmtest.Config{
		Binaries: bins,
		Files:    map[string][]byte{"/lib/udev/rules.d/60-persistent-storage.rules": rules},
		Disks:    disks,
		Serials:  []string{"", guestSerial},
		Script: `mkdir -p /run/udev /etc/udev
ln -s /bin/udevadm /bin/systemd-udevd
systemd-udevd --daemon || echo "VMTEST-RESULT udevd FAIL"
udevadm trigger --action=add --subsystem-match=block
udevadm settle --timeout=20
/bin/uevent.test -test.run '^TestGuest' -test.v -test.count=1`,
	})
	res.RequireSuccess(t, "TestGuestUdevHotplug")
	if s, ok := res.Data("udev-add"); ok {
		t.Logf("udev add event: %s", s)
	}
}
