package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// diskPart is what a test disk's partition holds before encryption.
type diskPart struct {
	start, size int64
	data        []byte
}

// makeDisk partitions a new image of size bytes with sfdisk (script in
// its input format) and fills each partition: root (number rootN) with
// an ext4 file system holding a file, the others with random bytes, so
// that any byte moved or lost shows.
func makeDisk(t *testing.T, dir string, size int64, script string, rootN int) (string, map[int]diskPart) {
	t.Helper()
	sfdisk := tstest.NeedTool(t, "sfdisk", "fdisk")
	mkfs := tstest.NeedTool(t, "mkfs.ext4", "e2fsprogs")
	disk := filepath.Join(dir, "disk.raw")
	f, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "-q", disk)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node        string
				Start, Size int64
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	out, err := exec.Command(sfdisk, "--json", disk).Output()
	if err != nil || json.Unmarshal(out, &table) != nil {
		t.Fatalf("sfdisk --json: %v %s", err, out)
	}
	parts := map[int]diskPart{}
	// Unallocated space before the first partition holds what a boot
	// loader put there (GRUB's core.img on an MBR disk).
	first := table.PartitionTable.Partitions[0].Start
	for _, p := range table.PartitionTable.Partitions {
		first = min(first, p.Start)
	}
	if _, err := f.WriteAt(randomBytes(int(first*512-34*512)), 34*512); err != nil {
		t.Fatal(err)
	}
	for _, p := range table.PartitionTable.Partitions {
		n, _ := strconv.Atoi(strings.TrimPrefix(p.Node, disk))
		dp := diskPart{start: p.Start * 512, size: p.Size * 512}
		if n == rootN {
			tree := filepath.Join(dir, "tree")
			os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
			os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("encrypted-root\n"), 0o644)
			root := filepath.Join(dir, "root.ext4")
			os.WriteFile(root, nil, 0o600)
			os.Truncate(root, dp.size)
			if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", tree, root).CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v: %s", err, out)
			}
			dp.data, _ = os.ReadFile(root)
		} else {
			dp.data = randomBytes(int(dp.size))
		}
		if _, err := f.WriteAt(dp.data, dp.start); err != nil {
			t.Fatal(err)
		}
		parts[n] = dp
	}
	return disk, parts
}

// checkTables runs sfdisk --verify and, for a GPT, sgdisk -v.
func checkTables(t *testing.T, disk string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--verify", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Fatalf("sfdisk --verify %s: %v: %s", disk, err, out)
	}
	if dump, _ := exec.Command("sfdisk", "--dump", disk).Output(); bytes.Contains(dump, []byte("label: gpt")) {
		out, err := exec.Command(tstest.NeedTool(t, "sgdisk", "gdisk"), "-v", disk).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("sgdisk -v %s: %v: %s", disk, err, out)
		}
	}
}

// sfdiskID is what sfdisk says about a partition's identity: its
// PARTUUID, type and name (GPT), and the disk's.
func sfdiskID(t *testing.T, disk string, n int) string {
	t.Helper()
	var id []string
	for _, args := range [][]string{{"--disk-id", disk}, {"--part-uuid", disk, fmt.Sprint(n)}, {"--part-type", disk, fmt.Sprint(n)}, {"--part-label", disk, fmt.Sprint(n)}} {
		out, err := exec.Command("sfdisk", args...).Output()
		if err != nil && args[0] != "--part-label" && args[0] != "--part-uuid" { // MBRs have neither
			t.Fatalf("sfdisk %v: %v", args, err)
		}
		id = append(id, strings.TrimSpace(string(out)))
	}
	return strings.Join(id, " ")
}

// luksDumpAt runs cryptsetup luksDump on the partition at start through a
// loop device, as a system that boots the image would see it.
func luksDumpAt(t *testing.T, disk string, start, size int64) string {
	t.Helper()
	tstest.NeedRoot(t, "loop devices")
	cs := tstest.NeedCryptsetup(t)
	out, err := exec.Command("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(start), "--sizelimit", fmt.Sprint(size), disk).CombinedOutput()
	if err != nil {
		tstest.Unavailable(t, "losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	dump, err := exec.Command(cs, "luksDump", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksDump of the partition: %v: %s", err, dump)
	}
	return string(dump)
}

const luksHeader = 16 << 20

// TestImagePartitionCLI encrypts the root partition of GPT and MBR disk
// images made by sfdisk, checks the tables with sfdisk and sgdisk, the
// other partitions byte for byte, the LUKS2 header with cryptsetup at the
// partition's offset, and decrypts back to the original disk.
func TestImagePartitionCLI(t *testing.T) {
	tests := []struct {
		name   string
		script string
		n      int
		grow   int64 // how much the disk grows
	}{
		// The root ends at the last usable sector, as in cloud images.
		{"gpt last", "label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649, name=bios\nsize=8M, type=U, name=esp\nsize=24M, type=BC13C2FF-59E6-4262-A352-B275FD6F7172, name=boot\nsize=61407, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n", 4, luksHeader},
		// Debian's cloud images: BIOS boot 14 and ESP 15 first, root 1.
		{"gpt numbered as in Debian", "label: gpt\nX14 : start=2048, size=6144, type=21686148-6449-6E6F-744E-656564454649\nX15 : start=8192, size=16384, type=U\nX1 : start=24576, size=106463, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n", 1, luksHeader},
		{"gpt middle with free space", "label: gpt\nsize=8M, type=U, name=esp\nsize=12M, type=L, name=root\nstart=40M, type=L, name=data\n", 2, 0},
		{"mbr last", "label: dos\nsize=8M, type=c, bootable\nsize=16M, type=83\ntype=83\n", 3, luksHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := localCLI(t)
			c.mustRun("kms", "create-key", "--alias", "images")
			dir := t.TempDir()
			disk, parts := makeDisk(t, dir, 64<<20, tt.script, tt.n)
			orig, _ := os.ReadFile(disk)
			checkTables(t, disk)
			idBefore := sfdiskID(t, disk, tt.n)

			img := filepath.Join(dir, "disk.img")
			r := c.mustRun("image", "encrypt", "--partition", fmt.Sprint(tt.n), disk, img, "--key-id", "images")
			if !strings.Contains(r.stdout, fmt.Sprintf("partition %d (PARTUUID", tt.n)) || !strings.Contains(r.stdout, "4096-byte sectors") || r.stderr != "" {
				t.Fatalf("encrypt: %q %q", r.stdout, r.stderr)
			}
			if fi, _ := os.Stat(img); fi.Mode().Perm() != 0o600 {
				t.Fatalf("the output of a 0600 disk image is %v", fi.Mode())
			}
			enc, _ := os.ReadFile(img)
			if tt.grow != 0 { // and the padding of the payload to whole 4096-byte sectors
				tt.grow += (4096 - parts[tt.n].size%4096) % 4096
			}
			if int64(len(enc)-len(orig)) != tt.grow {
				t.Fatalf("the disk grew by %d bytes, want %d", len(enc)-len(orig), tt.grow)
			}
			checkTables(t, img)
			if id := sfdiskID(t, img, tt.n); id != idBefore {
				t.Fatalf("identity after encryption %q, before %q", id, idBefore)
			}
			for n, p := range parts {
				if n != tt.n && !bytes.Equal(enc[p.start:p.start+p.size], p.data) {
					t.Fatalf("partition %d changed", n)
				}
			}
			// The boot code and the gap before the first partition
			// (where GRUB's core.img lives on an MBR disk) are kept.
			first := int64(len(orig))
			for _, p := range parts {
				first = min(first, p.start)
			}
			if !bytes.Equal(enc[:440], orig[:440]) || !bytes.Equal(enc[34*512:first], orig[34*512:first]) {
				t.Fatal("the space before the first partition changed")
			}
			root := parts[tt.n]
			if dump := luksDumpAt(t, img, root.start, root.size+luksHeader+(4096-root.size%4096)%4096); !strings.Contains(dump, "Version:       \t2") || !strings.Contains(dump, "sector: 4096 [bytes]") {
				t.Fatalf("luksDump: %s", dump)
			}

			var di struct {
				Scheme     string `json:"scheme"`
				Partitions []struct {
					Number    int    `json:"number"`
					Size      int64  `json:"size"`
					UUID      string `json:"partuuid"`
					Encrypted bool   `json:"encrypted"`
					LUKS      *struct {
						Segment struct {
							ImageSize int64 `json:"image_size"`
						} `json:"segment"`
					} `json:"luks"`
				} `json:"partitions"`
			}
			if err := json.Unmarshal([]byte(c.mustRun("image", "inspect", "--json", img).stdout), &di); err != nil {
				t.Fatal(err)
			}
			for _, p := range di.Partitions {
				if p.Encrypted != (p.Number == tt.n) || (p.Number == tt.n && (p.LUKS == nil || p.LUKS.Segment.ImageSize != root.size || p.Size != root.size+luksHeader+(4096-root.size%4096)%4096)) {
					t.Fatalf("inspect: %+v", di)
				}
			}
			text := c.mustRun("image", "inspect", img).stdout
			if !strings.Contains(text, "Partition table: "+di.Scheme) || !strings.Contains(text, fmt.Sprintf("Partition %d:", tt.n)) || !strings.Contains(text, "raw image") {
				t.Fatalf("inspect: %s", text)
			}
			if !strings.Contains(c.mustRun("image", "inspect", "--partition", fmt.Sprint(tt.n), img).stdout, "LUKS version") {
				t.Fatal("inspect --partition")
			}

			// rewrap touches only the token of that partition.
			other := strings.TrimSpace(c.mustRun("kms", "create-key").stdout)
			c.mustRun("image", "rewrap", "--partition", fmt.Sprint(tt.n), img, "--key-id", other)
			after, _ := os.ReadFile(img)
			if !bytes.Equal(after[:root.start], enc[:root.start]) || !bytes.Equal(after[root.start+0x8000:], enc[root.start+0x8000:]) {
				t.Fatal("rewrap changed more than the partition's LUKS2 metadata")
			}

			back := filepath.Join(dir, "back.raw")
			r = c.mustRun("image", "decrypt", "--partition", fmt.Sprint(tt.n), img, back)
			got, _ := os.ReadFile(back)
			if !bytes.Equal(got, orig) {
				t.Fatalf("decrypt --partition did not give back the original disk (%d bytes, want %d): %s", len(got), len(orig), r.stdout)
			}
		})
	}
}

// TestImagePartitionRefusals checks the one-line refusals.
func TestImagePartitionRefusals(t *testing.T) {
	c := localCLI(t)
	c.mustRun("kms", "create-key", "--alias", "images")
	dir := t.TempDir()
	disk, _ := makeDisk(t, dir, 64<<20, "label: gpt\nsize=8M, type=U\nsize=12M, type=L\nsize=2M, type=L\n", 2)
	plain := writeFile(t, filepath.Join(dir, "plain.raw"), strings.Repeat("x", 1<<20), 0o600)
	img := filepath.Join(dir, "disk.img")
	c.mustRun("image", "encrypt", "--partition", "3", disk, img, "--key-id", "images")
	out := filepath.Join(dir, "out.img")
	tests := []struct {
		want string
		args []string
	}{
		{"partition 2 is not the last one and has 0 bytes free after it (before partition 3) but must grow by 16777216 bytes; shrink its file system", []string{"image", "encrypt", "--partition", "2", disk, out, "--key-id", "images"}},
		{"partition 9 does not exist; the gpt table has partitions 1, 2, 3", []string{"image", "encrypt", "--partition", "9", disk, out, "--key-id", "images"}},
		{"no partition table", []string{"image", "encrypt", "--partition", "1", plain, out, "--key-id", "images"}},
		{"partition 3 already holds a LUKS header", []string{"image", "encrypt", "--partition", "3", img, out, "--key-id", "images"}},
		{"name the LUKS2 partition with --partition 3", []string{"image", "decrypt", img, out}},
		{"partition 1: not a LUKS2 volume", []string{"image", "decrypt", "--partition", "1", img, out}},
	}
	for _, tt := range tests {
		c.refuseRun(tt.want, tt.args...)
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v left %s behind", tt.args, out)
		}
	}
}

// TestImagePartitionProgress: --partition draws the same progress as a
// whole image, over the partition's bytes, and --progress=never silences
// it.
func TestImagePartitionProgress(t *testing.T) {
	c := localCLI(t)
	c.mustRun("kms", "create-key", "--alias", "images")
	dir := t.TempDir()
	disk, _ := makeDisk(t, dir, 64<<20, "label: gpt\nsize=8M, type=U, name=esp\nsize=12M, type=L, name=root\nstart=40M, type=L, name=data\n", 2)
	img := filepath.Join(dir, "disk.img")
	r := c.mustRun("image", "encrypt", "--partition", "2", "--progress=always", disk, img, "--key-id", "images")
	if !strings.HasPrefix(r.stderr, "\r") || !strings.Contains(r.stderr, "12.0 MiB in ") {
		t.Fatalf("encrypt --partition --progress=always drew %q", r.stderr)
	}
	r = c.mustRun("image", "decrypt", "--partition", "2", "--progress", "always", img, filepath.Join(dir, "back.raw"))
	if !strings.Contains(r.stderr, "12.0 MiB in ") {
		t.Fatalf("decrypt --partition --progress=always drew %q", r.stderr)
	}
	if r := c.mustRun("image", "decrypt", "--partition", "2", "--progress=never", img, filepath.Join(dir, "back2.raw")); r.stderr != "" {
		t.Fatalf("decrypt --partition --progress=never drew %q", r.stderr)
	}
	back, _ := os.ReadFile(filepath.Join(dir, "back.raw"))
	orig, _ := os.ReadFile(disk)
	if !bytes.Equal(back, orig) {
		t.Fatal("the decrypted disk differs from the original")
	}
}
