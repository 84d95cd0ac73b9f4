package probe

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"testing"
)

// readHead returns a testdata image prefix (see testdata/README.md).
func readHead(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".head.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scanBytes(t testing.TB, b []byte) []Signature {
	t.Helper()
	sigs, err := Scan(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return sigs
}

// want is the part of a Signature a test checks.
type want struct {
	typ       string
	offset    int64
	blockSize int
}

func check(t *testing.T, got []Signature, wants []want) {
	t.Helper()
	ok := len(got) == len(wants)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Type == wants[i].typ && got[i].Offset == wants[i].offset && got[i].BlockSize == wants[i].blockSize
	}
	if !ok {
		t.Fatalf("found %+v, want %+v", got, wants)
	}
}

// TestScanMadeByMkfs checks file systems as the real tools made them; the
// offsets are the ones wipefs lists for the same images.
func TestScanMadeByMkfs(t *testing.T) {
	tests := []struct {
		file string
		want []want
	}{
		{"ext4-1k", []want{{"ext4", 0x438, 1024}}},
		{"ext4-4k", []want{{"ext4", 0x438, 4096}}},
		{"ext2", []want{{"ext2", 0x438, 1024}}},
		{"xfs", []want{{"xfs", 0, 512}}},
		{"xfs-4k", []want{{"xfs", 0, 4096}}},
		{"btrfs", []want{{"btrfs", 0x10040, 4096}}},
		{"vfat", []want{{"vfat", 0x36, 512}}},
		{"vfat-4k", []want{{"vfat", 0x36, 4096}}},
		{"swap", []want{{"swap", 0xff6, 4096}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			check(t, scanBytes(t, readHead(t, tt.file)), tt.want)
		})
	}
}

// put returns a zeroed image of size bytes with each piece written at
// its offset.
func put(size int, pieces ...any) []byte {
	b := make([]byte, size)
	for i := 0; i+1 < len(pieces); i += 2 {
		off := pieces[i].(int)
		switch v := pieces[i+1].(type) {
		case string:
			copy(b[off:], v)
		case []byte:
			copy(b[off:], v)
		}
	}
	return b
}

func le32b(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64b(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func be32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// mdSB is an MD 1.x superblock header that says it is at off.
func mdSB(off int) []byte {
	b := make([]byte, 136)
	copy(b, le32b(mdMagic))
	copy(b[4:], le32b(1))
	copy(b[128:], le64b(uint64(off/512)))
	return b
}

func lvmLabel(sector uint64) []byte {
	b := make([]byte, 32)
	copy(b, "LABELONE")
	copy(b[8:], le64b(sector))
	copy(b[24:], "LVM2 001")
	return b
}

const mib = 1 << 20

func TestScanCrafted(t *testing.T) {
	luks2 := "LUKS\xba\xbe\x00\x02"
	tests := []struct {
		name string
		img  []byte
		want []want
	}{
		{"empty", nil, nil},
		{"zeros", make([]byte, mib), nil},
		{"lvm2 sector 1", put(mib, 512, lvmLabel(1)), []want{{"LVM2_member", 0x218, 0}}},
		{"lvm2 sector 3", put(mib, 1536, lvmLabel(3)), []want{{"LVM2_member", 1536 + 24, 0}}},
		{"lvm2 label names another sector", put(mib, 512, lvmLabel(2)), nil},
		{"md 1.1", put(mib, 0, mdSB(0)), []want{{"linux_raid_member", 0, 0}}},
		{"md 1.2", put(mib, 4096, mdSB(4096)), []want{{"linux_raid_member", 4096, 0}}},
		{"md 1.2 placed elsewhere", put(mib, 4096, mdSB(0)), nil},
		{"md 1.0 at the end", put(mib, mib-8192, mdSB(mib-8192)), []want{{"linux_raid_member", mib - 8192, 0}}},
		{"md 0.90 little-endian", put(mib, mib-0x10000, append(le32b(mdMagic), append(le32b(0), le32b(90)...)...)), []want{{"linux_raid_member", mib - 0x10000, 0}}},
		{"md 0.90 big-endian", put(mib, mib-0x10000, append(be32b(mdMagic), append(be32b(0), be32b(90)...)...)), []want{{"linux_raid_member", mib - 0x10000, 0}}},
		{"bcache", put(mib, 4096+24, bcacheMagic), []want{{"bcache", 4096 + 24, 0}}},
		{"zfs label 0", put(mib, 128<<10+3<<10, append(le64b(0x00bab10c), le64b(5000)...)), []want{{"zfs_member", 128 << 10, 0}}},
		{"zfs label 3", put(2*mib, 2*mib-128<<10, append(le64b(0x00bab10c), le64b(28)...)), []want{{"zfs_member", 2*mib - 128<<10, 0}}},
		{"zfs magic with a bad version", put(mib, 128<<10, append(le64b(0x00bab10c), le64b(0)...)), nil},
		{"ext4 64 KiB blocks", put(mib, 1024+0x18, le32b(6), 1024+0x38, "\x53\xef", 1024+0x60, le32b(0x40)), []want{{"ext4", 0x438, 65536}}},
		{"ext3", put(mib, 1024+0x38, "\x53\xef", 1024+0x5C, le32b(4)), []want{{"ext3", 0x438, 1024}}},
		{"ext journal device", put(mib, 1024+0x38, "\x53\xef", 1024+0x60, le32b(8)), []want{{"jbd", 0x438, 1024}}},
		{"ext magic with an absurd block size", put(mib, 1024+0x18, le32b(7), 1024+0x38, "\x53\xef"), nil},
		{"xfs with a bad sector size", put(mib, 0, "XFSB", 4, be32b(4096), 102, "\x03\x00"), nil},
		{"iso9660", put(mib, 0x8001, "CD001", 0x8000+128, "\x00\x08\x08\x00"), []want{{"iso9660", 0x8001, 2048}}},
		{"swap 64 KiB pages", put(mib, 65526, "SWAPSPACE2"), []want{{"swap", 65526, 65536}}},
		{"mbr", put(mib, 446, "\x80", 510, "\x55\xaa"), []want{{TypeDOS, 510, 0}}},
		{"55 aa without partition entries", put(mib, 446, "\x17", 510, "\x55\xaa"), nil},
		{"gpt", put(mib, 510, "\x55\xaa", 512, "EFI PART"), []want{{TypeDOS, 510, 0}, {TypeGPT, 512, 512}}},
		{"gpt 4k", put(mib, 4096, "EFI PART"), []want{{TypeGPT, 4096, 4096}}},
		{"fat with a bad sector size", put(mib, 11, "\x00\x03", 82, "FAT32", 510, "\x55\xaa"), nil},
		{"luks1", put(mib, 0, "LUKS\xba\xbe\x00\x01"), []want{{TypeLUKS, 0, 0}}},
		{"luks2 both copies", put(mib, 0, luks2, 0x4000, "SKUL\xba\xbe\x00\x02"), []want{{TypeLUKS, 0, 0}, {TypeLUKS, 0x4000, 0}}},
		{"luks2 secondary only", put(mib, 0x80000, "SKUL\xba\xbe\x00\x02"), []want{{TypeLUKS, 0x80000, 0}}},
		// A LUKS2 header's own fields never count as another format: a
		// SHA-512 checksum can end in 55 AA, a label can say FAT32.
		{"luks2 checksum ends in 55 aa", put(mib, 0, luks2, 510, "\x55\xaa"), []want{{TypeLUKS, 0, 0}}},
		{"luks2 label FAT32", put(mib, 0, luks2, 24, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxFAT32", 510, "\x55\xaa"), []want{{TypeLUKS, 0, 0}}},
		// What lies in the zero padding after them is real.
		{"luks2 and lvm2", put(mib, 0, luks2, 512, lvmLabel(1)), []want{{TypeLUKS, 0, 0}, {"LVM2_member", 0x218, 0}}},
		{"luks2 and ext4", put(mib, 0, luks2, 1024+0x38, "\x53\xef"), []want{{TypeLUKS, 0, 0}, {"ext2", 0x438, 1024}}},
		{"luks2 and swap", put(mib, 0, luks2, 4086, "SWAPSPACE2"), []want{{TypeLUKS, 0, 0}, {"swap", 4086, 4096}}},
		{"luks2 and md 1.0", put(mib, 0, luks2, mib-8192, mdSB(mib-8192)), []want{{TypeLUKS, 0, 0}, {"linux_raid_member", mib - 8192, 0}}},
		{"luks2 and gpt", put(mib, 0, luks2, 512, "EFI PART"), []want{{TypeLUKS, 0, 0}, {TypeGPT, 512, 512}}},
		{"everything at once", put(mib, 512, lvmLabel(1), 1024+0x38, "\x53\xef", 4086, "SWAPSPACE2", 0x10040, "_BHRfS_M", 0x10090, le32b(4096)),
			[]want{{"LVM2_member", 0x218, 0}, {"ext2", 0x438, 1024}, {"swap", 4086, 4096}, {"btrfs", 0x10040, 4096}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, scanBytes(t, tt.img), tt.want)
		})
	}
}

// TestScanLUKSVersion checks that a primary header of a version other
// than 2 is reported with its version, so callers can refuse it.
func TestScanLUKSVersion(t *testing.T) {
	for _, v := range []int{1, 2, 3} {
		img := put(mib, 0, "LUKS\xba\xbe\x00"+string(rune(v)), 0x4000, "SKUL\xba\xbe\x00\x02")
		sigs := scanBytes(t, img)
		if len(sigs) != 2 || sigs[0].Version != v || sigs[0].Secondary || sigs[1].Version != 2 || !sigs[1].Secondary {
			t.Fatalf("version %d: %+v", v, sigs)
		}
	}
}

// TestScanUnknownSize checks a stream prefix: no end-of-device probing,
// and a short prefix is no error.
func TestScanUnknownSize(t *testing.T) {
	img := put(mib, 512, lvmLabel(1), mib-8192, mdSB(mib-8192))
	sigs, err := Scan(bytes.NewReader(img), -1)
	if err != nil || len(sigs) != 1 || sigs[0].Type != "LVM2_member" {
		t.Fatalf("Scan: %+v, %v", sigs, err)
	}
	if sigs, err := Scan(bytes.NewReader(img[:600]), -1); err != nil || len(sigs) != 1 {
		t.Fatalf("short prefix: %+v, %v", sigs, err)
	}
}

func TestNames(t *testing.T) {
	sigs := scanBytes(t, put(mib, 0, "LUKS\xba\xbe\x00\x02", 512, lvmLabel(1), 4086, "SWAPSPACE2"))
	if got, want := Names(sigs), "a LUKS2 header (at offset 0x0), an LVM2 physical volume (at offset 0x218) and a swap area (at offset 0xff6)"; got != want {
		t.Fatalf("Names = %q, want %q", got, want)
	}
}

// FuzzScan feeds Scan arbitrary devices: it must not panic, and what it
// reports must lie on the device and make sense.
func FuzzScan(f *testing.F) {
	// Short seeds keep mutation fast; each still holds its superblock.
	for name, n := range map[string]int{"ext4-1k": 2048, "xfs": 512, "btrfs": 0x10100, "vfat": 512, "swap": 4096} {
		f.Add(readHead(f, name)[:n])
	}
	f.Add(put(8192, 0, "LUKS\xba\xbe\x00\x02", 512, lvmLabel(1), 4096, mdSB(4096)))
	f.Add(put(8192, 4096+24, bcacheMagic, 446, "\x80", 510, "\x55\xaa", 512, "EFI PART"))
	f.Add(put(0x8800, 0x8001, "CD001", 1024+0x38, "\x53\xef", 1024+0x18, le32b(2)))
	f.Add(put(70000, 65526, "SWAP-SPACE", 0x4000, "SKUL\xba\xbe\x00\x02"))
	f.Add([]byte("XFSB\x00\x00\x10\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, size := range []int64{int64(len(b)), -1} {
			sigs, err := Scan(bytes.NewReader(b), size)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sigs {
				if s.Offset < 0 || s.Offset+int64(s.Len) > int64(len(b)) || s.Type == "" || s.Name == "" {
					t.Fatalf("%+v on a %d-byte device", s, len(b))
				}
				if bs := s.BlockSize; bs != 0 && (bs < 512 || bs > 65536 || bits.OnesCount(uint(bs)) != 1) {
					t.Fatalf("%+v: block size", s)
				}
			}
		}
	})
}
