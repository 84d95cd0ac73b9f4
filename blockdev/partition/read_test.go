package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readBytes(b []byte) (*Table, error) { return Read(bytes.NewReader(b), int64(len(b))) }

// TestReadSeeds checks what Read finds in the images of testdata.
func TestReadSeeds(t *testing.T) {
	g, err := readBytes(seed(t, "gpt.img"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Partition{
		{Number: 1, Start: 3 * 512, Size: 10 * 512, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", TypeName: "EFI System", Name: "esp", UUID: "899e0b84-77ef-ad46-bcac-e891fa1d80f5"},
		{Number: 2, Start: 13 * 512, Size: 49 * 512, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", TypeName: "Linux filesystem", Name: "root"},
	}
	if g.Scheme != GPT || g.SectorSize != 512 || g.UsableStart != 3*512 || g.UsableEnd != 62*512 || len(g.Partitions) != 2 || len(g.Warnings) != 0 {
		t.Fatalf("gpt: %+v", g)
	}
	want[1].UUID = g.Partitions[1].UUID
	if g.Partitions[0] != want[0] || g.Partitions[1] != want[1] {
		t.Fatalf("gpt partitions %+v, want %+v", g.Partitions, want)
	}
	m, err := readBytes(seed(t, "mbr.img"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Scheme != MBR || m.DiskID != "b1fda92c" || len(m.Partitions) != 2 ||
		m.Partitions[0] != (Partition{Number: 1, Start: 512, Size: 20 * 512, Type: "0x0c", TypeName: "W95 FAT32 (LBA)", UUID: "b1fda92c-01", Bootable: true}) ||
		m.Partitions[1] != (Partition{Number: 2, Start: 21 * 512, Size: 43 * 512, Type: "0x83", TypeName: "Linux", UUID: "b1fda92c-02"}) {
		t.Fatalf("mbr: %+v", m)
	}
}

// TestReadRefuses damages the seed images in the ways a table can be
// damaged; each must be refused with an error that says what is wrong.
func TestReadRefuses(t *testing.T) {
	le := binary.LittleEndian
	// rehash fixes the primary header's CRC after a change to it.
	rehash := func(b []byte, at int) { le.PutUint32(b[at+16:], gptCRC(b[at:at+92])) }
	tests := []struct {
		name   string
		seed   string
		damage func(b []byte) []byte
		want   string
	}{
		{"primary header CRC", "gpt.img", func(b []byte) []byte { b[512+40]++; return b }, "primary GPT header fails its CRC32"},
		{"entry array CRC", "gpt.img", func(b []byte) []byte { b[1024+60]++; return b }, "primary GPT entry array fails its CRC32"},
		{"backup header CRC", "gpt.img", func(b []byte) []byte { b[len(b)-512+40]++; return b }, "backup GPT header fails its CRC32"},
		{"truncated", "gpt.img", func(b []byte) []byte { return b[:len(b)-4096] }, "truncated"},
		{"huge entry array", "gpt.img", func(b []byte) []byte { le.PutUint32(b[512+80:], 1<<30); rehash(b, 512); return b }, "more than 1048576 bytes"},
		{"entry size", "gpt.img", func(b []byte) []byte { le.PutUint32(b[512+84:], 100); rehash(b, 512); return b }, "entry size of 100"},
		{"headers disagree", "gpt.img", func(b []byte) []byte { le.PutUint64(b[512+48:], 60); rehash(b, 512); return b }, "disagree"},
		{"partition outside", "gpt.img", func(b []byte) []byte {
			for _, at := range []int{1024, len(b) - 512*2} { // both arrays
				le.PutUint64(b[at+128+40:], 62)
			}
			crc := crc32.ChecksumIEEE(b[1024 : 1024+512])
			for _, at := range []int{512, len(b) - 512} {
				le.PutUint32(b[at+88:], crc)
				rehash(b, at)
			}
			return b
		}, "not inside the usable area"},
		{"protective without GPT", "gpt.img", func(b []byte) []byte { b[512] = 0; return b }, "protective MBR"},
		{"mbr overlap", "mbr.img", func(b []byte) []byte { le.PutUint32(b[446+12:], 21); return b }, "overlap"},
		{"mbr past the end", "mbr.img", func(b []byte) []byte { le.PutUint32(b[446+16+12:], 44); return b }, "runs past the end"},
		{"no signature", "mbr.img", func(b []byte) []byte { b[511] = 0; return b }, "no partition table"},
		{"boot code, not a table", "mbr.img", func(b []byte) []byte { b[446] = 0xeb; return b }, "no partition table"},
		{"empty", "mbr.img", func(b []byte) []byte { clear(b[446:510]); return b }, "no partition table"},
		{"short", "mbr.img", func(b []byte) []byte { return b[:100] }, "no partition table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readBytes(tt.damage(seed(t, tt.seed)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read: %v, want %q", err, tt.want)
			}
			if strings.Contains(tt.want, "no partition table") != errors.Is(err, ErrNoTable) {
				t.Fatalf("Read: %v: ErrNoTable %v", err, errors.Is(err, ErrNoTable))
			}
		})
	}
}

// FuzzRead feeds Read arbitrary images: it must not panic, and a table
// it accepts must make sense and survive a resize of each partition:
// written out and read again, it gives the same partitions, one longer.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"gpt.img", "mbr.img"} {
		f.Add(seed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := readBytes(b)
		if err != nil {
			return
		}
		ss := int64(tab.SectorSize)
		if tab.UsableStart < 0 || tab.UsableEnd > tab.DiskSize || tab.UsableStart > tab.UsableEnd {
			t.Fatalf("usable area %d-%d on a %d-byte disk", tab.UsableStart, tab.UsableEnd, tab.DiskSize)
		}
		for _, p := range tab.Partitions {
			if p.Start < tab.UsableStart || p.End() > tab.UsableEnd || p.Size <= 0 || p.Start%ss != 0 || p.Size%ss != 0 {
				t.Fatalf("%+v outside %d-%d", p, tab.UsableStart, tab.UsableEnd)
			}
			grown, err := tab.Resize(p.Number, p.Size+ss)
			if err != nil {
				continue
			}
			if grown.DiskSize > tab.DiskSize+ss || grown.DiskSize < tab.DiskSize {
				t.Fatalf("growing partition %d by one sector made a %d-byte disk %d bytes", p.Number, tab.DiskSize, grown.DiskSize)
			}
			img := append(slices.Clone(b), make([]byte, grown.DiskSize-tab.DiskSize)...)
			if err := grown.Write(writerAt(img)); err != nil {
				t.Fatal(err)
			}
			again, err := readBytes(img)
			if err != nil {
				t.Fatalf("partition %d grown: %v", p.Number, err)
			}
			want := slices.Clone(tab.Partitions)
			for i := range want {
				if want[i].Number == p.Number {
					want[i].Size += ss
				}
			}
			if !slices.Equal(again.Partitions, want) || again.DiskID != tab.DiskID {
				t.Fatalf("partition %d grown: %+v, want %+v", p.Number, again.Partitions, want)
			}
		}
	})
}
