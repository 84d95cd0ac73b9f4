package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/vmtest"
	"kmsagent/blockdev/vmtest/debvm"
)

// The cloud disk of TestVMDaemonHotplug; the guest sees the first 20
// characters of its id as the virtio serial.
const vmVolumeID = "0b7c6b2e-7a5d-4c4e-8f8a-1234567890ab"

// Paths in the guest of TestVMDaemonHotplug.
const (
	guestKmsagent = "/usr/local/bin/kmsagent"
	guestConfig   = "/etc/kmsagent/agent.toml"
	guestSocket   = "/run/kmsagent/agent.sock"
	guestUnnamed  = "/etc/kmsagent/unnamed-uuid" // the header UUID of the disk no [[volume]] names
)

// TestVMDaemonHotplug boots Debian with systemd and udev, where the real
// daemon runs with the embedded KMS and an auto LUKS2 volume on an EVS
// disk that is not attached at boot. The host attaches disks through
// qemu's monitor when the guest asks (TestGuestDaemonHotplug says what
// the guest checks): the configured one gets unlocked and mounted, the
// daemon survives a kill -9 and adopts the mount, the disk is detached
// again; an unnamed kmsagent disk is opened as luks-<UUID> with
// auto_unlock_attached; after another kill -9 the first disk, attached
// again meanwhile, is mounted again at the next daemon's start.
// The host then decrypts the image and finds the file the guest wrote.
func TestVMDaemonHotplug(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian root file system and boots it")
	}
	tstest.NeedRoot(t, "to build the VM's root disk")
	tstest.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	debugfs := tstest.NeedTool(t, "debugfs", "e2fsprogs")
	e2fsck := tstest.NeedTool(t, "e2fsck", "e2fsprogs")
	start := time.Now()
	h := newDaemonHost(t)
	h.cli("kms", "create-key", "--alias", "disks")
	dataImg := encryptedExt4(t, h, "data", "hello from the host\n")
	unnamedImg := encryptedExt4(t, h, "unnamed", "unnamed\n")
	var info struct {
		UUID string `json:"uuid"`
	}
	if err := json.Unmarshal([]byte(h.cli("image", "inspect", unnamedImg, "--json")), &info); err != nil || info.UUID == "" {
		t.Fatalf("image inspect: %v %+v", err, info)
	}
	files := map[string][]byte{
		guestConfig: fmt.Appendf(nil, `[kms.local]
state_dir = "/var/lib/kmsagent/kms"

[agent]
socket = %q
state_dir = "/var/lib/kmsagent/agent"
audit_log = "/var/log/kmsagent/audit.log"
auto_unlock_attached = true

[[volume]]
name = "data"
type = "luks"
source = "evs:%s"
target = "/mnt/data"
fs_type = "ext4"
auto = true
`, guestSocket, vmVolumeID),
		guestUnnamed: []byte(info.UUID),
	}
	// The embedded KMS's keys go along.
	kmsDir := filepath.Join(h.dir, "kms")
	err := filepath.WalkDir(kmsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(kmsDir, p)
		files[filepath.Join("/var/lib/kmsagent/kms", rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	vm := debvm.New(t, debvm.Config{
		Files: files,
		Binaries: map[string]string{
			guestKmsagent:                  vmtest.BuildBinary(t, "."),
			"/usr/local/bin/kmsagent.test": vmtest.BuildTest(t, "."),
		},
		// The embedded KMS refuses a state directory others may read.
		Setup: "mkdir -p /mnt/data && chmod 700 /var/lib/kmsagent /var/lib/kmsagent/kms",
	})
	vm.ForcePoweroff = true
	// Under software emulation on a loaded 2-core host the boot alone
	// took 105 s; this only catches a hang.
	vm.Timeout = 12 * time.Minute
	t.Logf("root disk ready after %v", time.Since(start).Round(time.Millisecond))
	disks := map[string]string{"data": dataImg, "unnamed": unnamedImg}
	serials := map[string]string{"data": vmVolumeID, "unnamed": "unnamed-disk"}
	var asked []string
	vm.OnWait = func(ctx context.Context, name string, mon *vmtest.QMP) error {
		asked = append(asked, name)
		t.Logf("guest asks: %s (after %v)", name, time.Since(start).Round(time.Millisecond))
		if disk, ok := strings.CutPrefix(name, "attach-"); ok && disks[disk] != "" {
			return mon.AddDisk(ctx, disk, disks[disk], serials[disk])
		}
		if disk, ok := strings.CutPrefix(name, "detach-"); ok && disks[disk] != "" {
			return mon.RemoveDisk(ctx, disk)
		}
		return fmt.Errorf("unknown request %q", name)
	}
	res := vm.Boot(t, guestKmsagent+".test -test.run '^TestGuestDaemonHotplug$' -test.v -test.count=1")
	for _, m := range res.Markers {
		if m.Kind == "DATA" {
			t.Logf("guest: %s = %s", m.Name, m.Detail)
		}
	}
	if res.Status("TestGuestDaemonHotplug") != vmtest.Pass {
		// The guest test's output, with the daemons' logs in it.
		if i := strings.Index(res.Serial, "=== RUN   TestGuestDaemonHotplug"); i >= 0 {
			t.Logf("guest test:\n%s", res.Serial[i:])
		}
	}
	res.RequireSuccess(t, "TestGuestDaemonHotplug")
	if want := "attach-data detach-data attach-unnamed attach-data detach-unnamed"; strings.Join(asked, " ") != want {
		t.Errorf("the guest asked for %q, want %q", asked, want)
	}
	t.Logf("boot and guest test done after %v in all", time.Since(start).Round(time.Millisecond))

	// What the guest wrote reached the disk, encrypted. The VM powered
	// off with the file system mounted: e2fsck replays its journal
	// first, which debugfs does not do.
	raw := filepath.Join(t.TempDir(), "data.raw")
	h.cli("image", "decrypt", dataImg, raw)
	if out, err := exec.Command(e2fsck, "-fy", raw).CombinedOutput(); err != nil {
		// Exit status 1: errors corrected, such as a replayed journal.
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck of the decrypted image: %v\n%s", err, out)
		}
	}
	out, err := exec.Command(debugfs, "-R", "cat /written-in-vm", raw).Output()
	if err != nil || string(out) != "written by the guest\n" {
		t.Errorf("the decrypted image holds %q (%v), want the guest's file", out, err)
	}
}

// encryptedExt4 makes an ext4 file system holding the file /hello with
// content and encrypts it into a kmsagent LUKS2 image with the key
// "disks".
func encryptedExt4(t *testing.T, h *daemonHost, name, content string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "hello"), content, 0o644)
	raw := filepath.Join(dir, name+".raw")
	if out, err := exec.Command("mkfs.ext4", "-q", "-b", "4096", "-d", tree, raw, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	img := filepath.Join(dir, name+".img")
	h.cli("image", "encrypt", raw, img, "--key-id", "disks")
	return img
}
