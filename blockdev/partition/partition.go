package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Schemes, as blkid names them (PTTYPE).
const (
	GPT = "gpt"
	MBR = "dos"
)

// mbrSector is the size of the MBR, and of an MBR's sectors.
const mbrSector = 512

// ErrNoTable is returned by Read for an image without a partition table.
var ErrNoTable = errors.New("no partition table")

// Partition is one partition as the kernel would see it.
type Partition struct {
	Number int   // the kernel's number: GPT entry index + 1, MBR slot 1-4
	Start  int64 // bytes from the start of the disk
	Size   int64 // bytes
	// Type is the type GUID (GPT) or the type byte as 0xNN (MBR);
	// TypeName is what it is called, when known.
	Type     string
	TypeName string
	Name     string // GPT partition name
	// UUID is the PARTUUID: the unique partition GUID (GPT), or the disk
	// signature and number (MBR, "1a2b3c4d-02"), as blkid reports it.
	UUID       string
	Attributes uint64 // GPT attribute bits
	Bootable   bool   // MBR active flag
	Extended   bool   // an MBR extended partition (a container of logical ones)
}

// End is the offset of the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Table is a disk's partition table.
type Table struct {
	Scheme     string // GPT or MBR
	SectorSize int    // logical block size the table is laid out in
	DiskSize   int64  // bytes of the disk image
	// DiskID is the GPT disk GUID or the MBR disk signature (8 hex
	// digits), as blkid reports PTUUID.
	DiskID string
	// Usable is the range partitions may occupy, in bytes: [Start, End).
	UsableStart, UsableEnd int64
	Partitions             []Partition // in the order of their numbers
	// Warnings are oddities that do not stop the table from being used.
	Warnings []string

	mbr [mbrSector]byte
	gpt *gptState
}

// Partition returns partition n.
func (t *Table) Partition(n int) (Partition, error) {
	for _, p := range t.Partitions {
		if p.Number == n {
			return p, nil
		}
	}
	nums := make([]string, 0, len(t.Partitions))
	for _, p := range t.Partitions {
		nums = append(nums, fmt.Sprint(p.Number))
	}
	have := "no partitions"
	if len(nums) > 0 {
		have = "partitions " + strings.Join(nums, ", ")
	}
	extra := ""
	if t.Scheme == MBR && n > 4 {
		extra = " (logical partitions inside an extended one are not supported)"
	}
	return Partition{}, fmt.Errorf("partition %d does not exist%s; the %s table has %s", n, extra, t.Scheme, have)
}

// Read reads the partition table of a disk image of size bytes. It
// returns ErrNoTable (wrapped) when the image has none, and an error
// naming the damage when it has one that is not valid.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if size < mbrSector {
		return nil, fmt.Errorf("%w: the image is shorter than one sector", ErrNoTable)
	}
	t := &Table{DiskSize: size}
	if _, err := r.ReadAt(t.mbr[:], 0); err != nil {
		return nil, fmt.Errorf("read MBR: %w", err)
	}
	// A GPT header is looked for first: with 4096-byte sectors the
	// protective MBR is the first 512 bytes of LBA 0 as well.
	for _, lba := range []int{512, 4096} {
		if int64(2*lba) > size {
			break
		}
		sig := make([]byte, 8)
		if _, err := r.ReadAt(sig, int64(lba)); err != nil {
			return nil, fmt.Errorf("read GPT header: %w", err)
		}
		if string(sig) == gptSignature {
			t.Scheme, t.SectorSize = GPT, lba
			if err := t.readGPT(r); err != nil {
				return nil, err
			}
			return t, nil
		}
	}
	if t.mbr[510] != 0x55 || t.mbr[511] != 0xaa {
		return nil, fmt.Errorf("%w: no MBR boot signature", ErrNoTable)
	}
	t.Scheme, t.SectorSize = MBR, mbrSector
	if err := t.readMBR(); err != nil {
		return nil, err
	}
	return t, nil
}

// mbrEntry is one of the four primary slots of an MBR.
type mbrEntry struct {
	status      byte
	typ         byte
	start, size uint32
}

func (t *Table) mbrEntry(i int) mbrEntry {
	e := t.mbr[446+16*i : 446+16*(i+1)]
	return mbrEntry{status: e[0], typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), size: binary.LittleEndian.Uint32(e[12:])}
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

func (t *Table) readMBR() error {
	sectors := t.DiskSize / mbrSector
	if t.DiskSize%mbrSector != 0 {
		t.Warnings = append(t.Warnings, fmt.Sprintf("the image size (%d bytes) is not a multiple of 512; the last %d bytes are outside the disk", t.DiskSize, t.DiskSize%mbrSector))
	}
	sig := binary.LittleEndian.Uint32(t.mbr[440:])
	t.DiskID = fmt.Sprintf("%08x", sig)
	t.UsableStart, t.UsableEnd = mbrSector, sectors*mbrSector
	used := 0
	for i := range 4 {
		e := t.mbrEntry(i)
		// A file system's boot sector also ends in 55 aa; its bytes here
		// are code, whose status bytes are rarely 0 or 0x80 in all four.
		if e.status != 0 && e.status != 0x80 {
			return fmt.Errorf("%w: MBR slot %d has status byte %#02x (neither 0 nor 0x80): not a partition table", ErrNoTable, i+1, e.status)
		}
		if e.typ == 0 || e.size == 0 {
			continue
		}
		if e.typ == 0xee {
			return errors.New("the MBR is a GPT's protective MBR, but no valid GPT header is at LBA 1; repair the GPT (sgdisk -v)")
		}
		used++
		start, size := int64(e.start), int64(e.size)
		if start == 0 {
			return fmt.Errorf("MBR partition %d starts at sector 0, over the MBR itself", i+1)
		}
		if start+size > sectors {
			return fmt.Errorf("MBR partition %d (sectors %d-%d) runs past the end of the %d-sector image: the image is truncated", i+1, start, start+size-1, sectors)
		}
		p := Partition{
			Number: i + 1, Start: start * mbrSector, Size: size * mbrSector,
			Type: fmt.Sprintf("0x%02x", e.typ), TypeName: mbrTypes[e.typ],
			UUID: fmt.Sprintf("%08x-%02x", sig, i+1), Bootable: e.status == 0x80, Extended: isExtended(e.typ),
		}
		if p.Extended {
			t.Warnings = append(t.Warnings, fmt.Sprintf("partition %d is an extended partition; the logical partitions inside it are not listed", p.Number))
		}
		t.Partitions = append(t.Partitions, p)
	}
	if used == 0 {
		return fmt.Errorf("%w: the MBR has no partitions", ErrNoTable)
	}
	return checkOverlap(t.Partitions)
}

// checkOverlap refuses partitions that share sectors.
func checkOverlap(parts []Partition) error {
	s := slices.Clone(parts)
	slices.SortFunc(s, func(a, b Partition) int { return int(max(min(a.Start-b.Start, 1), -1)) })
	for i := 1; i < len(s); i++ {
		if s[i].Start < s[i-1].End() {
			return fmt.Errorf("partitions %d and %d overlap", s[i-1].Number, s[i].Number)
		}
	}
	return nil
}

// mbrTypes names the MBR partition types an image is likely to hold.
var mbrTypes = map[byte]string{
	0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16", 0x07: "HPFS/NTFS/exFAT",
	0x0b: "W95 FAT32", 0x0c: "W95 FAT32 (LBA)", 0x0e: "W95 FAT16 (LBA)", 0x0f: "W95 Ext'd (LBA)",
	0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8e: "Linux LVM",
	0xe8: "Linux LUKS", 0xea: "Linux extended boot", 0xef: "EFI (FAT-12/16/32)", 0xfd: "Linux raid autodetect",
}
