package crypt_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/vmtest"
	"kmsagent/kmsclient/local"
)

// TestGuestUdevLinks runs in the VM of TestVMUdev, with udevd and the
// device-mapper rules; in a VM without udev it skips. Every check comes
// right after Open or Close returns, without polling: the wait for udev
// is Open's and Close's job.
func TestGuestUdevLinks(t *testing.T) {
	ctl, unlock := udevGuest(t, dm.UdevSync)
	ctx := context.Background()
	const name = "udevvol"
	v, err := crypt.Open(ctx, ctl, "/dev/vda", crypt.Options{Name: name}, unlock)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ctl.Status(name)
	if err != nil {
		t.Fatal(err)
	}
	node := "/dev/dm-" + strconv.FormatUint(uint64(info.Minor()), 10)
	links := []string{
		"/dev/mapper/" + name,
		"/dev/disk/by-uuid/" + udevFSUUID,
		"/dev/disk/by-label/" + udevFSLabel,
		"/dev/disk/by-id/dm-name-" + name,
		"/dev/disk/by-id/dm-uuid-" + info.UUID,
	}
	for _, l := range links {
		fi, err := os.Lstat(l)
		if err != nil {
			t.Errorf("right after Open: %v", err)
			continue
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s is %v, want udev's symlink", l, fi.Mode())
			continue
		}
		if got, err := filepath.EvalSymlinks(l); err != nil || got != node {
			t.Errorf("%s -> %q, %v; want %s", l, got, err, node)
		}
	}
	if v.Device != "/dev/mapper/"+name {
		t.Errorf("Volume.Device = %q", v.Device)
	}

	// What systemd reads from udev's database to make
	// dev-mapper-<name>.device: the systemd tag, readiness, the link.
	out, err := exec.Command("udevadm", "info", "--query=property", "--name="+node).Output()
	if err != nil {
		t.Fatalf("udevadm info %s: %v", node, err)
	}
	props := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, val, ok := strings.Cut(l, "="); ok {
			props[k] = val
		}
	}
	vmtest.Data("udev-properties", strings.Join(strings.Fields(string(out)), " "))
	for k, want := range map[string]string{"DM_NAME": name, "DM_UUID": info.UUID, "ID_FS_UUID": udevFSUUID, "SYSTEMD_READY": "1", "DM_UDEV_PRIMARY_SOURCE_FLAG": "1"} {
		if props[k] != want {
			t.Errorf("udev property %s = %q, want %q", k, props[k], want)
		}
	}
	if !strings.Contains(props["TAGS"], ":systemd:") {
		t.Errorf("udev TAGS = %q, want the systemd tag", props["TAGS"])
	}
	if !strings.Contains(" "+props["DEVLINKS"]+" ", " /dev/mapper/"+name+" ") {
		t.Errorf("udev DEVLINKS = %q, want /dev/mapper/%s", props["DEVLINKS"], name)
	}
	requireNoCookies(t, "after Open")

	if _, err := crypt.Close(ctx, ctl, name, crypt.CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if _, err := os.Lstat(l); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("right after Close: %s is still there (%v)", l, err)
		}
	}
	requireNoCookies(t, "after Close")

	// A deferred remove of a busy device sends no event: Close must not
	// wait for one, nor leave the cookie behind. The links go when the
	// last user closes the device and udev handles the kernel's event.
	if _, err := crypt.Open(ctx, ctl, "/dev/vda", crypt.Options{Name: name}, unlock); err != nil {
		t.Fatal(err)
	}
	busy, err := os.Open("/dev/mapper/" + name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := crypt.Close(ctx, ctl, name, crypt.CloseOptions{})
	if err != nil || !res.Deferred {
		busy.Close()
		t.Fatalf("close of a busy volume: %+v, %v; want deferred", res, err)
	}
	requireNoCookies(t, "after a deferred Close")
	busy.Close()
	if !vmtest.Eventually(func() bool {
		_, err := os.Lstat("/dev/mapper/" + name)
		return errors.Is(err, fs.ErrNotExist)
	}) {
		t.Errorf("/dev/mapper/%s still there after the deferred remove", name)
	}
}

// TestGuestUdevWithoutDMRules runs in the VM of TestVMUdev whose udevd
// has no device-mapper rules, as on a host without dmsetup: nobody would
// complete a cookie, so Open and Close must not wait for one, and the
// package makes and removes /dev/mapper/<name> itself.
func TestGuestUdevWithoutDMRules(t *testing.T) {
	ctl, unlock := udevGuest(t, dm.UdevUnsynced)
	ctx := context.Background()
	const name = "udevvol"
	if _, err := crypt.Open(ctx, ctl, "/dev/vda", crypt.Options{Name: name}, unlock); err != nil {
		t.Fatal(err)
	}
	info, err := ctl.Status(name)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/mapper/"+name, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(info.Major(), info.Minor()) {
		t.Errorf("/dev/mapper/%s right after Open: %v, mode %#o, rdev %#x; want the device %d:%d", name, err, st.Mode, st.Rdev, info.Major(), info.Minor())
	}
	requireNoCookies(t, "after Open")
	if _, err := crypt.Close(ctx, ctl, name, crypt.CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat("/dev/mapper/" + name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("right after Close: /dev/mapper/%s is still there (%v)", name, err)
	}
	requireNoCookies(t, "after Close")
}

// requireNoCookies fails if a device-mapper udev cookie semaphore is
// left.
func requireNoCookies(t *testing.T, when string) {
	t.Helper()
	left, err := vmtest.DMCookies()
	if err != nil || len(left) > 0 {
		t.Errorf("%s: udev cookie semaphores left: %q %v", when, left, err)
	}
}

// udevGuest opens device-mapper in the VM and skips unless it sees udev
// as mode says, and returns the unlock function of the guest's KMS.
func udevGuest(t *testing.T, mode dm.UdevMode) (*dm.Control, func(context.Context, crypt.UnlockRequest) error) {
	t.Helper()
	vmtest.RequireGuest(t)
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })
	if ctl.Udev() != mode {
		t.Skipf("device-mapper sees %v", ctl.Udev())
	}
	vmtest.Report(t)
	store, err := local.Open(guestKMSDir)
	if err != nil {
		t.Fatal(err)
	}
	return ctl, func(ctx context.Context, req crypt.UnlockRequest) error {
		return crypt.Activate(ctx, ctl, store, req, nil)
	}
}
