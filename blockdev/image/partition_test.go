package image

import (
	"bytes"
	"crypto/aes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/xts"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/volume"
)

// TestPartDevice checks that a partition seen as a device never reads
// or writes outside it.
func TestPartDevice(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	disk := bytes.Repeat([]byte("abcdefgh"), 8)
	f.Write(disk)
	d := &partDevice{f: f, off: 8, size: 16}
	tests := []struct {
		name    string
		off     int64
		n       int
		want    string
		wantErr error
	}{
		{"inside", 0, 8, "abcdefgh", nil},
		{"to the end", 8, 8, "abcdefgh", nil},
		{"past the end", 12, 8, "efgh", io.EOF},
		{"at the end", 16, 4, "", io.EOF},
		{"negative", -1, 4, "", io.EOF},
	}
	for _, tt := range tests {
		b := make([]byte, tt.n)
		n, err := d.ReadAt(b, tt.off)
		if string(b[:n]) != tt.want || err != tt.wantErr {
			t.Errorf("%s: ReadAt gave %q, %v; want %q, %v", tt.name, b[:n], err, tt.want, tt.wantErr)
		}
	}
	if _, err := d.WriteAt([]byte("XXXX"), 14); err == nil {
		t.Error("a write across the partition's end was not refused")
	}
	if _, err := d.WriteAt([]byte("XXXX"), 12); err != nil {
		t.Fatal(err)
	}
	if end, _ := d.Seek(0, io.SeekEnd); end != 16 {
		t.Errorf("Seek to the end gave %d", end)
	}
	got := make([]byte, len(disk))
	f.ReadAt(got, 0)
	want := bytes.Clone(disk)
	copy(want[20:], "XXXX")
	if !bytes.Equal(got, want) {
		t.Errorf("disk after a write: %q", got)
	}
}

// lbaDisk makes a GPT disk image of size bytes with sfdisk (script in
// its input format) in sectors of lba bytes (4096 through a loop device)
// and fills its partitions with random bytes.
func lbaDisk(t *testing.T, size int64, lba int, script string) string {
	t.Helper()
	sfdisk := tstest.NeedTool(t, "sfdisk", "fdisk")
	path := filepath.Join(t.TempDir(), "disk.raw")
	os.WriteFile(path, nil, 0o600)
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "-q", "--no-reread", "--no-tell-kernel", withLBA(t, path, lba))
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	tab, err := ReadTable(f, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tab.Partitions {
		f.WriteAt(randomData(t, int(p.Size)), p.Start)
	}
	return path
}

// withLBA is path as a disk with lba-byte sectors: the file itself for
// 512, a loop device otherwise.
func withLBA(t *testing.T, path string, lba int) string {
	t.Helper()
	if lba == 512 {
		return path
	}
	tstest.NeedRoot(t, "loop devices with 4096-byte sectors")
	out, err := exec.Command("losetup", "-f", "--show", "-b", fmt.Sprint(lba), path).CombinedOutput()
	if err != nil {
		tstest.Unavailable(t, "losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestEncryptPartition encrypts the last partition of GPT disks with 512-
// and 4096-byte sectors; sfdisk and sgdisk check the output's table, the
// payload at the partition's data offset decrypts with x/crypto/xts to
// the partition's contents, and DecryptPartition gives back the input.
func TestEncryptPartition(t *testing.T) {
	f := newFixture(t)
	for _, lba := range []int{512, 4096} {
		t.Run(fmt.Sprint(lba), func(t *testing.T) {
			// sfdisk ends the last partition at the last whole MiB, so it
			// grows into the free space after it and the disk by the rest.
			disk := lbaDisk(t, 64<<20, lba, "label: gpt\nsize=4M, type=U\ntype=L\n")
			in, _ := os.Open(disk)
			defer in.Close()
			orig, _ := os.ReadFile(disk)
			tab, _ := ReadTable(in, int64(len(orig)))
			p, _ := tab.Partition(2)
			outPath := filepath.Join(t.TempDir(), "disk.img")
			out, _ := CreateOutput(outPath, 0o600)
			res, err := EncryptPartition(ctx, in, int64(len(orig)), out.File, 2, f.opts(0, -1))
			if err != nil {
				out.Abort()
				t.Fatal(err)
			}
			if err := out.Commit(); err != nil {
				t.Fatal(err)
			}
			enc, _ := os.ReadFile(outPath)
			free := tab.UsableEnd - p.End()
			if res.SectorSize != 4096 || res.Partition.Size != p.Size+headerSize || res.Grown != headerSize-free || int64(len(enc)) != int64(len(orig))+res.Grown {
				t.Fatalf("result %+v, partition %+v, %d bytes free after it", res, res.Partition, free)
			}
			for _, args := range [][]string{{"sfdisk", "--verify"}, {"sgdisk", "-v"}} {
				out, err := exec.Command(args[0], args[1], withLBA(t, outPath, lba)).CombinedOutput()
				if err != nil || !(strings.Contains(string(out), "No errors detected") || strings.Contains(string(out), "No problems found")) {
					t.Fatalf("%v: %v: %s", args, err, out)
				}
			}
			img, _ := os.Open(outPath)
			defer img.Close()
			dev, _, err := OpenPartition(img, 2)
			if err != nil {
				t.Fatal(err)
			}
			vk, err := volume.ExportKey(ctx, dev, f.kms, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := xts.NewCipher(aes.NewCipher, vk.Bytes())
			vk.Wipe()
			if err != nil {
				t.Fatal(err)
			}
			payload := enc[p.Start+headerSize : p.Start+res.Partition.Size]
			plain := make([]byte, len(payload))
			for k := 0; k < len(payload)/4096; k++ {
				c.Decrypt(plain[k*4096:(k+1)*4096], payload[k*4096:(k+1)*4096], uint64(k*8))
			}
			if !bytes.Equal(plain, orig[p.Start:p.End()]) {
				t.Fatal("x/crypto/xts does not decrypt the partition's payload to its contents")
			}

			backPath := filepath.Join(t.TempDir(), "back.raw")
			back, _ := CreateOutput(backPath, 0o600)
			if _, err := DecryptPartition(ctx, img, back.File, 2, DecryptOptions{KMS: f.kms}); err != nil {
				back.Abort()
				t.Fatal(err)
			}
			back.Commit()
			got, _ := os.ReadFile(backPath)
			// The free space the partition took is not given back: the
			// disk is smaller by it, and its table says so.
			gt, err := ReadTable(bytes.NewReader(got), int64(len(got)))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(orig)-int(free) || !bytes.Equal(got[tab.UsableStart:p.End()], orig[tab.UsableStart:p.End()]) ||
				gt.DiskID != tab.DiskID || !slices.Equal(gt.Partitions, tab.Partitions) {
				t.Fatal("DecryptPartition did not give back the input")
			}
		})
	}
}
