package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountLuksRefusals runs on the host, which has no device-mapper: the
// dm-crypt path itself is tested in the VM (blockdev/crypt). Every refusal
// is one line and leaves no loop device behind.
func TestMountLuksRefusals(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	img := filepath.Join(h.dir, "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 40<<20); err != nil {
		t.Fatal(err)
	}
	h.must("format", "luks", img, "--key-id", "k")
	plain := filepath.Join(h.dir, "plain.img")
	os.WriteFile(plain, make([]byte, 1<<20), 0o600)

	h.refuse("no such file", "mount", "luks", filepath.Join(h.dir, "missing.img"))
	h.refuse("contains '/'", "mount", "luks", img, "--name", "a/b")
	h.refuse("is not a kmsagent mount or volume", "umount", "no-such-volume")
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		h.refuse("device-mapper", "mount", "luks", img)
		h.refuse("device-mapper", "mount", "luks", plain)
	}
	out, _ := exec.Command("losetup", "-j", img).Output()
	out2, _ := exec.Command("losetup", "-j", plain).Output()
	if s := strings.TrimSpace(string(out) + string(out2)); s != "" {
		t.Fatalf("loop devices left behind: %s", s)
	}
}
