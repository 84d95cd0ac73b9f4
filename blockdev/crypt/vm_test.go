package crypt_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/vmtest"
	"kmsagent/blockdev/volume"
	"kmsagent/blockdev/xts"
	"kmsagent/kmsclient/local"
)

// guestTests are the tests of guest_test.go, run inside the VM.
var guestTests = []string{
	"TestGuestMountCycle",
	"TestGuestImageFile",
	"TestGuestCryptsetupVolume",
	"TestGuestFailuresLeaveNothing",
	"TestGuestSameVolumeTwice",
	"TestGuestKillWorker",
	"TestGuestConcurrentUnlock",
}

const (
	diskBytes    = 40 << 20
	benchVolumes = 32
	ctPass       = "cryptsetup passphrase"
	ctText       = "encrypted by cryptsetup on the host\n"
)

// TestVMOpenClose prepares disks on the host (a kmsagent volume holding
// an ext4 file system, one with no file system, one made by cryptsetup
// and enrolled, one with a token copied from another volume), boots a VM
// with the kmsagent binary and this package's test binary, and runs the
// guest tests there. Afterwards it decrypts /dev/vda here and checks the
// file the VM wrote.
func TestVMOpenClose(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	vmtest.Require(t)
	tstest.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	tstest.NeedTool(t, "debugfs", "e2fsprogs")
	tstest.NeedCryptsetup(t)
	ctx := context.Background()
	dir := t.TempDir()
	kmsDir := filepath.Join(dir, "kms")
	store, err := local.Open(kmsDir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.CreateKey(ctx, "vmtest", "")
	if err != nil {
		t.Fatal(err)
	}
	disk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, diskBytes); err != nil {
			t.Fatal(err)
		}
		return p
	}
	format := func(p string) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := volume.Format(ctx, f, store, volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: key.ID}}); err != nil {
			t.Fatal(err)
		}
	}

	// vda: kmsagent volume with an ext4 file system built here.
	vda := disk("vda.img")
	format(vda)
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte(helloText), 0o644)
	seg, vk := segmentAndKey(t, vda, store)
	fsImg := filepath.Join(dir, "fs.img")
	fsSize := int64(diskBytes) - int64(seg.Offset)
	fsSize -= fsSize % int64(seg.SectorSize)
	if err := os.WriteFile(fsImg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(fsImg, fsSize)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, fsImg).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	plain, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}
	writePayload(t, vda, seg, vk, plain)

	// vdb: kmsagent volume without a file system.
	vdb := disk("vdb.img")
	format(vdb)

	// vdc: an ext4 file system that cryptsetup itself encrypted in place
	// (LUKS2, 4096-byte sectors), enrolled with our token: the VM must
	// read what cryptsetup wrote, which pins the dm table to cryptsetup's.
	vdc := disk("vdc.img")
	ctSrc := filepath.Join(dir, "ct-src")
	os.MkdirAll(ctSrc, 0o755)
	os.WriteFile(filepath.Join(ctSrc, "ct.txt"), []byte(ctText), 0o644)
	// The file system leaves 16 MiB at the end for cryptsetup to shift
	// the data into when it puts the header in front.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", ctSrc, vdc, fmt.Sprintf("%dk", (diskBytes-16<<20)/1024)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte(ctPass), 0o600)
	if out, err := exec.Command("cryptsetup", "reencrypt", "--encrypt", "--batch-mode", "--type", "luks2",
		"--force-offline-reencrypt", "--sector-size", "4096", "--reduce-device-size", "16M",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass, vdc).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup reencrypt --encrypt: %v\n%s", err, out)
	}
	func() {
		f, err := os.OpenFile(vdc, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := volume.Enroll(ctx, f, store, []byte(ctPass), volume.EnrollOptions{KeyID: key.ID}); err != nil {
			t.Fatal(err)
		}
	}()

	// vdd: a kmsagent volume carrying vdb's token (wrong binding).
	vdd := disk("vdd.img")
	format(vdd)
	copyToken(t, vdb, vdd)

	// vde: benchVolumes small kmsagent volumes as GPT partitions, for
	// the concurrent unlock benchmark.
	var parts []string
	for i := 0; i < benchVolumes; i++ {
		p := filepath.Join(dir, fmt.Sprintf("part%02d.img", i))
		os.WriteFile(p, nil, 0o600)
		os.Truncate(p, 17<<20)
		format(p)
		parts = append(parts, p)
	}
	vde := filepath.Join(dir, "vde.img")
	writeGPT(t, vde, parts)
	for _, p := range parts {
		os.Remove(p)
	}

	files := guestKMSFiles(t, kmsDir, key.ID)

	res := vmtest.Run(t, vmtest.Config{
		Binaries: map[string]string{
			"/bin/crypt.test": vmtest.BuildTest(t, "."),
			kmsagentBin:       vmtest.BuildBinary(t, "kmsagent/cmd/kmsagent"),
		},
		Files:    files,
		Disks:    []string{vda, vdb, vdc, vdd, vde},
		CPUs:     2,
		Modules:  []string{"loop"},
		Script:   "mkdir -p /mnt; chmod 700 " + guestKMSDir + "; KMSAGENT_CONFIG=" + guestConfig + " /bin/crypt.test -test.run '^TestGuest' -test.v -test.count=1",
		Timeout:  8 * time.Minute, // see vmtest.DefaultTimeout
		MemoryMB: 768,
	})
	for _, m := range res.Markers {
		if m.Kind == "DATA" {
			t.Logf("guest %s: %s", m.Name, m.Detail)
		}
	}
	res.RequireSuccess(t, guestTests...)

	// The disk holds ciphertext that decrypts to the file the VM wrote.
	img, err := os.ReadFile(vda)
	if err != nil {
		t.Fatal(err)
	}
	payload := img[seg.Offset : seg.Offset+uint64(fsSize)]
	if bytes.Contains(payload, []byte(vmText)) {
		t.Fatal("the VM's text is on the disk in plaintext")
	}
	c, err := xts.New(vk)
	if err != nil {
		t.Fatal(err)
	}
	dec := make([]byte, len(payload))
	for off := 0; off < len(payload); off += seg.SectorSize {
		c.DecryptSector(dec[off:off+seg.SectorSize], payload[off:off+seg.SectorSize], luksIV(seg, off))
	}
	os.WriteFile(fsImg, dec, 0o600)
	out, err := exec.Command("debugfs", "-R", "cat /vm.txt", fsImg).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	if string(out) != vmText {
		t.Fatalf("decrypted /vm.txt = %q, want %q", out, vmText)
	}
}

// guestKMSFiles returns the files that give the VM the local KMS in
// kmsDir (at guestKMSDir) with its key id and a kmsagent configuration.
func guestKMSFiles(t *testing.T, kmsDir, keyID string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		guestConfig: fmt.Appendf(nil, "[kms.local]\nstate_dir = %q\n", guestKMSDir),
		guestKeyID:  []byte(keyID),
	}
	err := filepath.WalkDir(kmsDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(kmsDir, p)
		files[filepath.Join(guestKMSDir, rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// segmentAndKey returns the data segment and volume key of a kmsagent
// volume.
func segmentAndKey(t *testing.T, path string, store *local.Store) (luks2.SegmentInfo, []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := volume.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := h.Segment()
	if err != nil {
		t.Fatal(err)
	}
	k, err := volume.Unlock(context.Background(), f, store)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	return seg, bytes.Clone(k.Bytes())
}

// luksIV is the IV of the sector at byte off of the segment, as cryptsetup
// sets up dm-crypt for LUKS2: 512-byte units at every sector size, plus
// the segment's iv_tweak.
func luksIV(seg luks2.SegmentInfo, off int) uint64 {
	return seg.IVTweak + uint64(off)/512
}

// writePayload encrypts plain into the data segment as cryptsetup and
// kmsagent image encrypt do.
func writePayload(t *testing.T, path string, seg luks2.SegmentInfo, vk, plain []byte) {
	t.Helper()
	c, err := xts.New(vk)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, len(plain))
	for off := 0; off < len(plain); off += seg.SectorSize {
		c.EncryptSector(ct[off:off+seg.SectorSize], plain[off:off+seg.SectorSize], luksIV(seg, off))
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(ct, int64(seg.Offset)); err != nil {
		t.Fatal(err)
	}
}

// copyToken puts the kmsagent token of from into the header of to.
func copyToken(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hs, err := volume.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(to, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	hd, err := volume.ReadHeader(dst)
	if err != nil {
		t.Fatal(err)
	}
	for id, raw := range hs.Tokens() {
		if err := hd.SetToken(id, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := hd.Write(dst); err != nil {
		t.Fatal(err)
	}
}
