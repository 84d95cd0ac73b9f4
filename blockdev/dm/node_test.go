package dm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// requireMknod skips unless this process may make device nodes (root),
// and fails instead under CI=true, where tests run as root.
func requireMknod(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := unix.Mknod(filepath.Join(dir, "probe"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0)))
	if err != nil {
		tstest.Unavailable(t, "cannot make device nodes (needs root): %v", err)
	}
	os.Remove(filepath.Join(dir, "probe"))
	return dir
}

func rdev(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("%s is not a block device", path)
	}
	return st.Rdev
}

// kdev is a device number in dm_ioctl.dev encoding (huge_encode_dev).
func kdev(major, minor uint32) uint64 {
	return uint64(minor&0xff | major<<8 | (minor&^0xff)<<12)
}

func TestEnsureNode(t *testing.T) {
	dir := filepath.Join(requireMknod(t), "mapper")
	d := kdev(254, 300) // minor above 255 exercises the split encoding
	made, err := EnsureNode(dir, "vol", d)
	if err != nil || !made {
		t.Fatalf("EnsureNode = %v, %v", made, err)
	}
	path := filepath.Join(dir, "vol")
	if got := rdev(t, path); unix.Major(got) != 254 || unix.Minor(got) != 300 {
		t.Fatalf("node is %d:%d, want 254:300", unix.Major(got), unix.Minor(got))
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("node mode %v, want 0600", fi.Mode().Perm())
	}
	if made, err := EnsureNode(dir, "vol", d); err != nil || made {
		t.Fatalf("second EnsureNode = %v, %v; want existing node kept", made, err)
	}

	// A stale node for another device is replaced.
	if made, err := EnsureNode(dir, "vol", kdev(254, 1)); err != nil || !made {
		t.Fatalf("EnsureNode over stale node = %v, %v", made, err)
	}
	if got := rdev(t, path); unix.Minor(got) != 1 {
		t.Fatalf("stale node not replaced: minor %d", unix.Minor(got))
	}

	// A udev-style symlink to the right device is left alone.
	target := filepath.Join(dir, "..", "dm-3")
	if err := unix.Mknod(target, unix.S_IFBLK|0o600, int(unix.Mkdev(254, 3))); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "linked")
	if err := os.Symlink("../dm-3", link); err != nil {
		t.Fatal(err)
	}
	if made, err := EnsureNode(dir, "linked", kdev(254, 3)); err != nil || made {
		t.Fatalf("EnsureNode over udev link = %v, %v", made, err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("udev link was replaced")
	}

	// A regular file is not a node to replace.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureNode(dir, "file", d); err == nil || !strings.Contains(err.Error(), "not a device node") {
		t.Fatalf("EnsureNode over a regular file: %v", err)
	}
	if _, err := EnsureNode(dir, "../escape", d); err == nil {
		t.Fatal("EnsureNode accepted a name with '/'")
	}
}

func TestRemoveNode(t *testing.T) {
	dir := requireMknod(t)
	d := kdev(254, 7)
	if _, err := EnsureNode(dir, "vol", d); err != nil {
		t.Fatal(err)
	}
	// A node for another device is not ours to remove.
	if err := RemoveNode(dir, "vol", kdev(254, 8)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "vol")); err != nil {
		t.Fatal("node of another device was removed")
	}
	if err := RemoveNode(dir, "vol", d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "vol")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("node not removed")
	}
	if err := RemoveNode(dir, "vol", d); err != nil {
		t.Fatalf("removing a missing node: %v", err)
	}
	// Symlinks belong to udev.
	if err := os.Symlink("../dm-7", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveNode(dir, "link", d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "link")); err != nil {
		t.Fatal("udev link removed")
	}
}

func TestMiscMinor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "misc")
	if err := os.WriteFile(path, []byte(" 56 snapshot\n236 device-mapper\n229 fuse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		minor uint32
		ok    bool
	}{
		{"device-mapper", 236, true},
		{"fuse", 229, true},
		{"loop-control", 0, false},
	}
	for _, tt := range tests {
		m, ok, err := miscMinor(path, tt.name)
		if err != nil || ok != tt.ok || m != tt.minor {
			t.Errorf("miscMinor(%q) = %d, %v, %v", tt.name, m, ok, err)
		}
	}
	if _, _, err := miscMinor(filepath.Join(t.TempDir(), "none"), "x"); err == nil {
		t.Error("missing file not reported")
	}
}

// TestOpenWithoutDeviceMapper runs where the kernel has no device-mapper
// (like the machine these tests were first written on) and checks that
// the error says so in one line.
func TestOpenWithoutDeviceMapper(t *testing.T) {
	if _, ok, err := miscMinor("/proc/misc", "device-mapper"); err != nil || ok {
		t.Skip("this kernel has device-mapper")
	}
	_, err := OpenWith(Options{ControlPath: filepath.Join(t.TempDir(), "control")})
	if err == nil {
		t.Fatal("Open succeeded without device-mapper")
	}
	if !strings.Contains(err.Error(), "device-mapper is not in this kernel") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("unclear error: %q", err)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("error does not wrap ENOENT: %v", err)
	}
}

func TestVersionCheck(t *testing.T) {
	tests := []struct {
		v  Version
		ok bool
	}{
		{Version{4, 47, 0}, true},
		{Version{4, 27, 0}, true},
		{Version{4, 26, 9}, false},
		{Version{5, 0, 0}, false},
		{Version{3, 99, 0}, false},
	}
	for _, tt := range tests {
		err := tt.v.check()
		if (err == nil) != tt.ok {
			t.Errorf("%v: err = %v, want ok=%v", tt.v, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tt.v.String()) {
			t.Errorf("%v: error does not name the version: %v", tt.v, err)
		}
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	for _, errno := range []unix.Errno{unix.ENXIO, unix.EEXIST, unix.EBUSY, unix.ENOKEY, unix.EINVAL, unix.EPERM, unix.EIO} {
		for _, op := range []string{opCreate, opLoad, opMessage, opRemove} {
			err := opError(op, "vol", errno)
			if !errors.Is(err, errno) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), `"vol"`) {
				t.Errorf("opError(%s, %v) = %q", op, errno, err)
			}
		}
	}
	if opError(opCreate, "vol", nil) != nil {
		t.Error("opError(nil) is not nil")
	}
}
