package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// sparseFile makes a file of size bytes (a stand-in for a disk).
func sparseFile(t *testing.T, dir string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// mustRun runs a command in-process and fails unless it succeeds.
func (c *cli) mustRun(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("kmsagent %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// refuseRun runs a command that must fail with a one-line error
// containing want and exit 1, or exitKey when the KMS refused the key
// ("not found").
func (c *cli) refuseRun(want string, args ...string) {
	c.t.Helper()
	code := exitFailure
	if want == "not found" {
		code = exitKey
	}
	r := c.run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		c.t.Fatalf("kmsagent %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

func cryptsetupOK(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil && !tstest.InCI() {
		t.Log("cryptsetup not installed; skipping its check")
		return
	}
	tstest.MustCryptsetup(t, args...)
}

// TestLuksLifecycle: format a disk file with a recovery passphrase,
// export the key both ways, rewrap, unenroll, enroll again.
func TestLuksLifecycle(t *testing.T) {
	tstest.NeedRoot(t, "for export-key")
	c := localCLI(t)
	dir := t.TempDir()
	key := strings.TrimSpace(c.mustRun("kms", "create-key", "--alias", "disks").stdout)
	disk := sparseFile(t, dir, 17<<20)
	recovery := writeFile(t, filepath.Join(dir, "recovery"), "break glass\n", 0o600)

	r := c.mustRun("format", "luks", disk, "--key-id", "disks", "--sector-size", "512", "--recovery-passphrase-file", recovery, "--pbkdf-memory", "1024")
	if !strings.Contains(r.stdout, "key wrapped by local key "+key) || !strings.Contains(r.stdout, "recovery passphrase in keyslot 1") {
		t.Fatalf("format output %q", r.stdout)
	}
	c.refuseRun("holds a LUKS2 header", "format", "luks", disk, "--key-id", "disks")

	r = c.mustRun("export-key", disk)
	vkHex := strings.TrimSpace(r.stdout)
	if len(vkHex) != 128 || !strings.Contains(r.stderr, "WARNING") {
		t.Fatalf("export-key: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if got := strings.TrimSpace(c.mustRun("export-key", disk, "--passphrase-file", recovery).stdout); got != vkHex {
		t.Fatal("export-key with the recovery passphrase gave another key")
	}
	vk, _ := hex.DecodeString(vkHex)
	cryptsetupOK(t, "open", "--test-passphrase", "--volume-key-file", writeFile(t, filepath.Join(dir, "vk"), string(vk), 0o600), disk)
	cryptsetupOK(t, "open", "--test-passphrase", "--key-file", recovery, disk)

	other := strings.TrimSpace(c.mustRun("kms", "create-key").stdout)
	if r := c.mustRun("rewrap", disk, "--key-id", other); !strings.Contains(r.stdout, "from "+key+" to "+other) {
		t.Fatalf("rewrap output %q", r.stdout)
	}
	c.mustRun("kms", "disable-key", "disks")
	if got := strings.TrimSpace(c.mustRun("export-key", disk).stdout); got != vkHex {
		t.Fatal("export-key after rewrap gave another key")
	}
	c.mustRun("kms", "enable-key", "disks")

	c.mustRun("unenroll", disk)
	c.refuseRun("no kmsagent token", "export-key", disk)
	c.refuseRun("no kmsagent token", "unenroll", disk)
	c.mustRun("enroll", disk, "--key-id", "disks", "--passphrase-file", recovery)
	if got := strings.TrimSpace(c.mustRun("export-key", disk).stdout); got != vkHex {
		t.Fatal("export-key after enroll gave another key")
	}
	c.refuseRun("already enrolled", "enroll", disk, "--key-id", "disks", "--passphrase-file", recovery)
}

// TestLuksRefusals: bad input gives one line, exit 1, and an untouched
// file.
func TestLuksRefusals(t *testing.T) {
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "disks")
	only := sparseFile(t, t.TempDir(), 17<<20) // formatted without recovery
	c.mustRun("format", "luks", only, "--key-id", "disks")
	ext4 := sparseFile(t, t.TempDir(), 17<<20)
	f, _ := os.OpenFile(ext4, os.O_RDWR, 0)
	f.WriteAt([]byte{0x53, 0xEF}, 1024+56)
	f.Close()
	plain := sparseFile(t, t.TempDir(), 17<<20)
	damaged := sparseFile(t, t.TempDir(), 17<<20)
	c.mustRun("format", "luks", damaged, "--key-id", "disks")
	f, _ = os.OpenFile(damaged, os.O_RDWR, 0)
	f.WriteAt([]byte("xxxx"), 0x1000)
	f.WriteAt([]byte("xxxx"), 0x5000)
	f.Close()
	// A LUKS2 volume with an LVM2 label in its header padding, and one
	// whose primary header is LUKS1 with a LUKS2 copy behind it.
	lvm := sparseFile(t, t.TempDir(), 17<<20)
	c.mustRun("format", "luks", lvm, "--key-id", "disks")
	f, _ = os.OpenFile(lvm, os.O_RDWR, 0)
	f.WriteAt([]byte("LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00LVM2 001"), 512)
	f.Close()
	luks1 := sparseFile(t, t.TempDir(), 17<<20)
	c.mustRun("format", "luks", luks1, "--key-id", "disks")
	f, _ = os.OpenFile(luks1, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 1}, 6)
	f.Close()
	pass := writeFile(t, filepath.Join(dir, "pass"), "secret", 0o600)
	open := writeFile(t, filepath.Join(dir, "open"), "secret", 0o644)
	unenrolled := sparseFile(t, t.TempDir(), 17<<20) // a passphrase keyslot only
	c.mustRun("format", "luks", unenrolled, "--key-id", "disks", "--recovery-passphrase-file", pass, "--pbkdf-memory", "1024")
	c.mustRun("unenroll", unenrolled)

	tests := []struct {
		want string
		args []string
		file string // must stay unchanged
	}{
		{"does not exist", []string{"format", "luks", filepath.Join(dir, "missing"), "--key-id", "disks"}, ""},
		{"the device holds an ext2 file system (1024-byte blocks) (at offset 0x438); formatting destroys it; pass --force", []string{"format", "luks", ext4, "--key-id", "disks"}, ext4},
		{"ambiguous device: besides a LUKS2 header (at offset 0x0) it holds an LVM2 physical volume (at offset 0x218), which writing the LUKS2 header would destroy; find out which is in use (wipefs " + lvm, []string{"rewrap", lvm, "--key-id", "disks"}, lvm},
		{"ambiguous device", []string{"unenroll", lvm}, lvm},
		{"ambiguous device", []string{"enroll", lvm, "--key-id", "disks", "--passphrase-file", pass}, lvm},
		{"it holds a LUKS1 header (at offset 0x0), which writing the LUKS2 header would destroy; kmsagent writes only LUKS2: if the LUKS1 volume is in use, convert it first (cryptsetup convert --type luks2 " + luks1, []string{"rewrap", luks1, "--key-id", "disks"}, luks1},
		{"not found", []string{"format", "luks", plain, "--key-id", "nope"}, plain},
		{"not a LUKS2 volume", []string{"enroll", plain, "--key-id", "disks", "--passphrase-file", pass}, plain},
		{"already enrolled", []string{"enroll", only, "--key-id", "disks", "--passphrase-file", pass}, only},
		{"opens no keyslot", []string{"enroll", unenrolled, "--key-id", "disks", "--passphrase-file", writeFile(t, filepath.Join(dir, "wrong"), "secret\n", 0o600)}, unenrolled},
		{"not found", []string{"enroll", unenrolled, "--key-id", "nope", "--passphrase-file", pass}, unenrolled},
		{"readable by group or others", []string{"enroll", only, "--key-id", "disks", "--passphrase-file", open}, only},
		{"only keyslot", []string{"unenroll", only}, only},
		{"not found", []string{"rewrap", only, "--key-id", "nope"}, only},
		{"damaged LUKS2 header", []string{"rewrap", damaged, "--key-id", "disks"}, damaged},
		{"not a LUKS2 volume", []string{"unenroll", plain}, plain},
		{"neither a block device nor a regular file", []string{"unenroll", dir}, ""},
	}
	for _, tt := range tests {
		var before [32]byte
		if tt.file != "" {
			before = sum(t, tt.file)
		}
		c.refuseRun(tt.want, tt.args...)
		if tt.file != "" && sum(t, tt.file) != before {
			t.Fatalf("%v changed %s", tt.args, tt.file)
		}
	}
	for _, args := range [][]string{
		{"format", "luks", plain},
		{"format", "luks", plain, "--key-id", "disks", "--sector-size", "1024"},
		{"enroll", plain, "--key-id", "disks"},
		{"unenroll"},
	} {
		if r := c.run(args...); r.code != 2 {
			t.Fatalf("%v: exit %d, want 2 (usage): %s", args, r.code, r.stderr)
		}
	}
}
