package vmtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestHotplug boots a VM with no disk and has the host attach one through
// the QMP monitor when the guest asks, with a serial, then detach it: the
// guest sees it appear as vda with that serial and go again, and qemu
// releases the image. A request the host cannot serve fails the boot.
func TestHotplug(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	disk := filepath.Join(t.TempDir(), "hot.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 4<<20); err != nil {
		t.Fatal(err)
	}
	const serial = "0123456789abcdefghij-and-more"
	var asked []string
	script := `
check() { if eval "$2"; then echo "VMTEST-RESULT $1 PASS"; else echo "VMTEST-RESULT $1 FAIL"; fi; }
until_() { for i in $(seq 600); do eval "$1" && return 0; sleep 0.1; done; return 1; }
check absent '[ ! -e /sys/block/vda ]'
echo "VMTEST-WAIT attach"; read -r _ </dev/ttyS0
check attached 'until_ "[ -b /dev/vda ]"'
check serial '[ "$(cat /sys/block/vda/serial)" = 0123456789abcdefghij ]'
check size '[ "$(cat /sys/block/vda/size)" = 8192 ]'
echo written | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null && sync
echo "VMTEST-WAIT detach"; read -r _ </dev/ttyS0
check detached '[ ! -e /sys/block/vda ]'
`
	res := Run(t, Config{
		Script: script,
		OnWait: func(ctx context.Context, name string, mon *QMP) error {
			asked = append(asked, name)
			switch name {
			case "attach":
				return mon.AddDisk(ctx, "hot0", disk, serial)
			case "detach":
				return mon.RemoveDisk(ctx, "hot0")
			}
			return errors.New("unknown request")
		},
	})
	res.RequireSuccess(t, "absent", "attached", "serial", "size", "detached")
	if len(asked) != 2 {
		t.Errorf("host asked for %q, want attach and detach", asked)
	}
	b, err := os.ReadFile(disk)
	if err != nil || string(b[:8]) != "written\n" {
		t.Errorf("the image does not hold what the guest wrote: %q %v", b[:8], err)
	}

	// An action that fails stops the VM at once and fails the boot.
	env := Require(t)
	_, err = run(t.TempDir(), env, Config{
		Script: "echo 'VMTEST-WAIT nothing'; sleep 600",
		OnWait: func(ctx context.Context, name string, mon *QMP) error {
			_, err := mon.Execute(ctx, "no-such-command", nil)
			return err
		},
	})
	var qerr *QMPError
	if !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Errorf("boot with a failing host action: %v, want the QMP error", err)
	}
}
