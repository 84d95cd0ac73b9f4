package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// unboundPass is the passphrase of the unbound keyslot of cryptsetup's
// test image luks2_keyslot_unassigned.img, whose shape unboundImage
// copies.
const unboundPass = "93R4P4pIqAH8"

// unboundImage makes a LUKS2 image with cryptsetup: keyslot 0 opens the
// volume with the returned passphrase file, keyslot 1 is unbound
// (luksAddKey --unbound) and opens with unboundPass.
func unboundImage(t *testing.T, dir string) (disk, boundFile, unboundFile string) {
	t.Helper()
	tstest.NeedCryptsetup(t)
	disk = sparseFile(t, dir, 18<<20)
	boundFile = writeFile(t, filepath.Join(dir, "bound"), "the volume's passphrase\n", 0o600)
	unboundFile = writeFile(t, filepath.Join(dir, "unbound"), unboundPass, 0o600)
	tstest.LuksFormat(t, disk, boundFile)
	tstest.LuksAddUnbound(t, disk, unboundFile)
	return disk, boundFile, unboundFile
}

// TestUnboundKeyslotRefused: the passphrase of an unbound keyslot opens
// nothing: no command prints, decrypts or enrolls with the key it holds,
// which is not the volume key.
func TestUnboundKeyslotRefused(t *testing.T) {
	tstest.NeedRoot(t, "for export-key")
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "disks")
	disk, bound, unbound := unboundImage(t, dir)
	before := sum(t, disk)

	out := filepath.Join(dir, "out.raw")
	c.refuseRun("keyslot 1, which is unbound", "export-key", disk, "--passphrase-file", unbound)
	c.refuseRun("keyslot 1, which is unbound", "image", "decrypt", disk, out, "--passphrase-file", unbound)
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused decrypt left %s: %v", out, err)
	}
	c.refuseRun("keyslot 1, which is unbound", "enroll", disk, "--key-id", "disks", "--passphrase-file", unbound)
	if sum(t, disk) != before {
		t.Fatal("a refused enroll changed the image")
	}

	r := c.mustRun("image", "inspect", disk)
	if !strings.Contains(r.stdout, "  1: luks2 (unbound),") || strings.Contains(r.stdout, "  0: luks2 (unbound)") {
		t.Fatalf("inspect does not mark keyslot 1 (only) unbound:\n%s", r.stdout)
	}
	var info struct {
		Keyslots []struct {
			ID      int  `json:"id"`
			Unbound bool `json:"unbound"`
		} `json:"keyslots"`
	}
	r = c.mustRun("image", "inspect", "--json", disk)
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || len(info.Keyslots) != 2 || info.Keyslots[0].Unbound || !info.Keyslots[1].Unbound {
		t.Fatalf("inspect --json keyslots %+v (%v):\n%s", info.Keyslots, err, r.stdout)
	}

	// The bound passphrase still works for all of them.
	vk := strings.TrimSpace(c.mustRun("export-key", disk, "--passphrase-file", bound).stdout)
	c.mustRun("image", "decrypt", disk, out, "--passphrase-file", bound)
	c.mustRun("enroll", disk, "--key-id", "disks", "--passphrase-file", bound)
	if got := strings.TrimSpace(c.mustRun("export-key", disk).stdout); got != vk {
		t.Fatal("the KMS keyslot holds another key than the bound passphrase's")
	}
	cryptsetupOK(t, "open", "--test-passphrase", "--key-file", bound, disk)
}

// TestDetachedHeaderRefused: a header whose data segment starts at
// offset 0 (a detached header, cryptsetup luksFormat --header) would have
// its data written over it on the device that holds it: every command
// refuses it, as cryptsetup refuses to activate it, and leaves it as it
// is.
func TestDetachedHeaderRefused(t *testing.T) {
	tstest.NeedRoot(t, "for export-key")
	tstest.NeedCryptsetup(t)
	c := localCLI(t)
	c.mustRun("kms", "create-key", "--alias", "disks")
	dir := t.TempDir()
	hdr := sparseFile(t, dir, 17<<20)
	data := filepath.Join(dir, "data.img")
	if err := os.WriteFile(data, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := writeFile(t, filepath.Join(dir, "pass"), "detached", 0o600)
	tstest.LuksFormat(t, data, pass, "--header", hdr)
	before := sum(t, hdr)
	const want = "segment 0 starts at offset 0, inside the metadata and keyslot area"
	for _, args := range [][]string{
		{"image", "inspect", hdr},
		{"image", "decrypt", hdr, filepath.Join(dir, "out"), "--passphrase-file", pass},
		{"export-key", hdr, "--passphrase-file", pass},
		{"enroll", hdr, "--key-id", "disks", "--passphrase-file", pass},
		{"unenroll", hdr},
		{"rewrap", hdr, "--key-id", "disks"},
	} {
		c.refuseRun(want, args...)
	}
	if sum(t, hdr) != before {
		t.Fatal("a refused command changed the header")
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Fatalf("a refused decrypt left its output: %v", err)
	}
}

// TestReencryptionInProgressRefused: an image in the middle of an online
// reencryption (cryptsetup reencrypt --init-only) is shown by inspect
// but opened by no command: its data is partly under each of two keys.
func TestReencryptionInProgressRefused(t *testing.T) {
	tstest.NeedRoot(t, "for export-key")
	c := localCLI(t)
	c.mustRun("kms", "create-key", "--alias", "disks")
	dir := t.TempDir()
	disk, bound, _ := unboundImage(t, dir)
	tstest.MustCryptsetup(t, append(append([]string{"reencrypt", "--init-only"}, tstest.FastKDF()...), "--key-file", bound, disk)...)
	before := sum(t, disk)
	r := c.mustRun("image", "inspect", disk)
	if !strings.Contains(r.stdout, "reencrypt (a reencryption is in progress") || !strings.Contains(r.stdout, "Requirements:  online-reencrypt") {
		t.Fatalf("inspect:\n%s", r.stdout)
	}
	const want = "a reencryption is in progress"
	c.refuseRun(want, "export-key", disk, "--passphrase-file", bound)
	c.refuseRun(want, "image", "decrypt", disk, filepath.Join(dir, "out"), "--passphrase-file", bound)
	c.refuseRun("unfinished reencryption", "enroll", disk, "--key-id", "disks", "--passphrase-file", bound)
	if sum(t, disk) != before {
		t.Fatal("a refused command changed the image")
	}
}
