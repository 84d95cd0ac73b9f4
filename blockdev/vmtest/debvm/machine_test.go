package debvm

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kmsagent/blockdev/vmtest"
)

func TestBaseKey(t *testing.T) {
	a := baseKey([]string{"udev", "systemd-sysv"})
	if b := baseKey([]string{"systemd-sysv", "udev", "udev"}); a != b {
		t.Errorf("key depends on order or duplicates: %s != %s", a, b)
	}
	if c := baseKey([]string{"systemd-sysv", "udev", "gocryptfs"}); a == c {
		t.Errorf("another package list has the same key %s", a)
	}
	if !strings.HasPrefix(a, Suite+"-") {
		t.Errorf("key %q does not name the suite", a)
	}
}

func TestMachine(t *testing.T) {
	vm := &VM{
		Root:    "/r/root.img",
		Timeout: DefaultTimeout,
		env:     vmtest.Env{QEMU: "qemu", Kernel: "/boot/vmlinuz-x"},
		initrd:  "/boot/initrd.img-x",
	}
	m := vm.machine("/d/a,b.sh")
	if !slices.Equal(m.Args, []string{"-fw_cfg", "name=opt/debvm/script,file=/d/a,,b.sh"}) {
		t.Errorf("args %q", m.Args)
	}
	if m.Initrd != vm.initrd || !strings.Contains(m.Cmdline, "root=/dev/vda") ||
		strings.Contains(m.Cmdline, cmdlineForcePoweroff) || m.Serials != nil {
		t.Errorf("machine %+v", m)
	}

	vm.ForcePoweroff = true
	vm.Disks = []Disk{{Path: "/d/1.img"}, {Path: "/d/2.img", Serial: "vol-2"}}
	m = vm.machine("/d/s.sh")
	if !strings.HasSuffix(m.Cmdline, " "+cmdlineForcePoweroff) {
		t.Errorf("cmdline %q lacks %s", m.Cmdline, cmdlineForcePoweroff)
	}
	if !slices.Equal(m.Disks, []string{"/r/root.img", "/d/1.img", "/d/2.img"}) ||
		!slices.Equal(m.Serials, []string{"", "", "vol-2"}) {
		t.Errorf("disks %q serials %q", m.Disks, m.Serials)
	}
}

func TestWriteSystemFiles(t *testing.T) {
	tree := t.TempDir()
	// The base has an fstab; it gets replaced.
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/fstab"), []byte("# UNCONFIGURED FSTAB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Fstab: "/dev/mapper/data /data ext4 defaults 0 2\n", Crypttab: "data /dev/vdb none luks\n"}
	if err := writeSystemFiles(tree, cfg); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(tree, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("etc/fstab"); got != "/dev/vda / ext4 rw 0 0\n"+cfg.Fstab {
		t.Errorf("fstab %q", got)
	}
	if got := read("etc/crypttab"); got != cfg.Crypttab {
		t.Errorf("crypttab %q", got)
	}
	if id := strings.TrimSpace(read("etc/machine-id")); len(id) != 32 {
		t.Errorf("machine-id %q", id)
	}
	if fi, err := os.Stat(filepath.Join(tree, guestRunner)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("runner: %v %v", fi, err)
	}
	for link, target := range map[string]string{
		"etc/systemd/system/multi-user.target.wants/" + guestUnit: "/etc/systemd/system/" + guestUnit,
		"etc/systemd/system/serial-getty@ttyS0.service":           "/dev/null",
		"etc/systemd/system/apt-daily.timer":                      "/dev/null",
	} {
		if got, err := os.Readlink(filepath.Join(tree, link)); err != nil || got != target {
			t.Errorf("%s -> %q (%v), want %s", link, got, err, target)
		}
	}

	if err := writeFile(tree, "etc/relative", nil, 0o600); err == nil {
		t.Error("a relative guest path accepted")
	}
}
