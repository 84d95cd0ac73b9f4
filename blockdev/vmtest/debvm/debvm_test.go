package debvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/blockdev/vmtest"
)

// TestDebianVM boots the Debian system twice from one disk and checks
// what the kmsagent boot tests build on: systemd reaches multi-user with
// no failed unit, device-mapper and dm-crypt load, systemd-cryptsetup
// and its generator are there, udev makes by-id links for an extra disk's
// serial, the test's files, .deb (with its unit enabled by its
// postinst) and setup script are in place, and what the first boot wrote
// is there on the second.
func TestDebianVM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian root file system and boots it twice")
	}
	start := time.Now()
	data := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(data, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 16<<20); err != nil {
		t.Fatal(err)
	}
	vm := New(t, Config{
		Debs:  []string{probeDeb(t)},
		Files: map[string][]byte{"/etc/debvm-test/secret": []byte("hello")},
		Setup: "echo setup >/etc/debvm-setup",
	})
	vm.Disks = []Disk{{Path: data, Serial: "debvm-data"}}
	t.Logf("root disk ready after %v", time.Since(start).Round(time.Millisecond))

	first := vm.Boot(t, `
check multi-user 'systemctl is-active --quiet multi-user.target'
check dm-control 'dmsetup version && [ -c /dev/mapper/control ]'
check dm-crypt 'modprobe dm-crypt && grep -q "^dm_crypt " /proc/modules'
check fuse '[ -c /dev/fuse ]'
check systemd-cryptsetup '[ -x /lib/systemd/systemd-cryptsetup ] && [ -x /lib/systemd/system-generators/systemd-cryptsetup-generator ]'
check cryptsetup 'cryptsetup --version'
check data-disk '[ "$(readlink -f /dev/disk/by-id/virtio-debvm-data)" = /dev/vdb ]'
check file '[ "$(stat -c %a /etc/debvm-test/secret)" = 600 ] && [ "$(cat /etc/debvm-test/secret)" = hello ]'
check deb-unit 'systemctl is-active --quiet debvm-probe.service'
check setup '[ "$(cat /etc/debvm-setup)" = setup ]'
echo first >/var/lib/debvm-boot
`)
	first.RequireSuccess(t, "multi-user", "dm-control", "dm-crypt", "fuse", "systemd-cryptsetup",
		"cryptsetup", "data-disk", "file", "deb-unit", "setup")
	requireRunning(t, first)
	t.Logf("first boot done after %v in all", time.Since(start).Round(time.Millisecond))

	vm.ForcePoweroff = true // the first boot stopped the units in order
	second := vm.Boot(t, `
check persisted '[ "$(cat /var/lib/debvm-boot)" = first ]'
check deb-unit 'systemctl is-active --quiet debvm-probe.service'
check data-disk '[ -b /dev/disk/by-id/virtio-debvm-data ]'
`)
	second.RequireSuccess(t, "persisted", "deb-unit", "data-disk")
	requireRunning(t, second)
	id1, _ := first.Data("boot-id")
	id2, _ := second.Data("boot-id")
	if id1 == "" || id1 == id2 {
		t.Errorf("boot ids %q and %q: want two different boots", id1, id2)
	}
	t.Logf("two boots done after %v in all", time.Since(start).Round(time.Millisecond))
}

// TestDebianVMScriptFailure checks that a failing script comes back as
// its exit status and FAIL markers, with the journal on the console,
// rather than as a hang or a passing boot.
func TestDebianVMScriptFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian VM")
	}
	vm := New(t, Config{})
	vm.ForcePoweroff = true
	res := vm.Boot(t, `
check false 'false'
data note 'two
lines'
exit 7
`)
	if res.ExitCode != 7 || res.Status("false") != "FAIL" {
		t.Errorf("exit %d, check %q; want 7 and FAIL", res.ExitCode, res.Status("false"))
	}
	if v, _ := res.Data("note"); v != "two lines" {
		t.Errorf("data note = %q", v)
	}
	// systemctl --failed ends with a count; journal lines carry the
	// host name, which the console's own lines do not.
	if !strings.Contains(res.Serial, "loaded units listed") || !strings.Contains(res.Serial, " debvm systemd[1]: ") {
		t.Errorf("no failed units and journal on the console after a failure")
	}
}

// requireRunning fails the test unless systemd said the boot finished
// with no failed unit. It logs how long the start-up took, to tell a slow
// host from a slow unit when boots get slow.
func requireRunning(t *testing.T, res *vmtest.Result) {
	t.Helper()
	startup, _ := res.Data("startup")
	t.Logf("%s", startup)
	if state, _ := res.Data("system-state"); state != "running" {
		failed, _ := res.Data("failed-units")
		t.Errorf("system state %q (failed units: %s), want running", state, failed)
	}
}

// probeDeb builds a small package as debhelper would make one for a
// service: a unit, enabled by the postinst with deb-systemd-helper.
func probeDeb(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skipf("dpkg-deb: %v", err)
	}
	root := t.TempDir()
	files := map[string]string{
		"DEBIAN/control": "Package: debvm-probe\nVersion: 1\nArchitecture: all\n" +
			"Maintainer: kmsagent tests <tests@example.invalid>\nDescription: unit enabled at install\n",
		"DEBIAN/postinst": "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then deb-systemd-helper enable debvm-probe.service; fi\n",
		"lib/systemd/system/debvm-probe.service": "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\n" +
			"[Install]\nWantedBy=multi-user.target\n",
	}
	for p, s := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "postinst") {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(t.TempDir(), "debvm-probe_1_all.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	return deb
}
