package vmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBoot boots the VM once with a disk and checks what later tests rely
// on: /init ran the script, the modules are loaded (device-mapper control
// node, dm-crypt and xts registered), the disk is /dev/vda with its size,
// files arrive with their modes, and the script's status comes back.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 3<<20); err != nil {
		t.Fatal(err)
	}
	script := `
check() { if eval "$2"; then echo "VMTEST-RESULT $1 PASS"; else echo "VMTEST-RESULT $1 FAIL"; fi; }
check dm-control '[ -c /dev/mapper/control ]'
check dm-crypt 'grep -q "^dm_crypt " /proc/modules'
check xts 'grep -q "^xts " /proc/modules'
check disk '[ "$(cat /sys/block/vda/size)" = 6144 ]'
check file-mode '[ "$(stat -c %a /vmtest/secret)" = 600 ] && [ "$(cat /vmtest/secret)" = hello ]'
check guest-env '[ "$VMTEST_GUEST" = 1 ]'
echo "VMTEST-DATA kernel $(uname -r)"
exit 3
`
	res := Run(t, Config{
		Files:  map[string][]byte{"/vmtest/secret": []byte("hello")},
		Disks:  []string{disk},
		Script: script,
	})
	if res.ExitCode != 3 {
		t.Errorf("script exit status %d, want 3", res.ExitCode)
	}
	res.ExitCode = 0 // the 3 above was intended
	res.RequireSuccess(t, "dm-control", "dm-crypt", "xts", "disk", "file-mode", "guest-env")
	if k, ok := res.Data("kernel"); !ok || !strings.Contains(k, "cloud-amd64") {
		t.Errorf("kernel datum %q, %v", k, ok)
	}
}

// TestBootTimeout checks that a boot that does not finish in time is
// stopped and reported, rather than hanging the test run.
func TestBootTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a VM")
	}
	env := Require(t)
	start := time.Now()
	res, err := run(t.TempDir(), env, Config{Script: "sleep 600", Timeout: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "did not power off") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("timed-out boot took %v to stop", d)
	}
	if res == nil || res.ExitCode != -1 {
		t.Errorf("result %+v, want exit -1", res)
	}
}
