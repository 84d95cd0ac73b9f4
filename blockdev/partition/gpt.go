package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
)

const (
	gptSignature  = "EFI PART"
	gptRevision   = 0x00010000
	gptHeaderSize = 92 // the fields of revision 1.0; the rest of the sector is zero
	// maxEntryArray bounds the entry array read from an untrusted header:
	// 128 entries of 128 bytes is what every tool writes; 1 MiB leaves
	// room for unusual tables without letting a header ask for gigabytes.
	maxEntryArray = 1 << 20
	entryNameOff  = 56
)

// gptState is what a GPT holds beyond the partitions: both headers as
// read (the fields kmsagent does not interpret are kept) and the entry
// array, which is the same in both copies.
type gptState struct {
	primary, backup []byte // header sectors
	entries         []byte
	entryCount      uint32
	entrySize       uint32
	firstUsable     uint64
	lastUsable      uint64
	altLBA          uint64 // the backup header
	entriesLBA      uint64 // the primary entry array
	backupEntries   uint64 // the backup entry array
}

// gptHeader is a parsed GPT header.
type gptHeader struct {
	raw                     []byte
	myLBA, altLBA           uint64
	firstUsable, lastUsable uint64
	diskGUID                [16]byte
	entriesLBA              uint64
	entryCount, entrySize   uint32
	entriesCRC              uint32
}

// parseGPTHeader checks a header sector's own fields and checksum.
func parseGPTHeader(b []byte, where string) (*gptHeader, error) {
	le := binary.LittleEndian
	if string(b[:8]) != gptSignature {
		return nil, fmt.Errorf("the %s GPT header has no signature", where)
	}
	size := le.Uint32(b[12:])
	if size < gptHeaderSize || int(size) > len(b) {
		return nil, fmt.Errorf("the %s GPT header claims a size of %d bytes", where, size)
	}
	if rev := le.Uint32(b[8:]); rev != gptRevision {
		return nil, fmt.Errorf("the %s GPT header has revision %#x, not 1.0", where, rev)
	}
	if gptCRC(b[:size]) != le.Uint32(b[16:]) {
		return nil, fmt.Errorf("the %s GPT header fails its CRC32 check: it is damaged", where)
	}
	h := &gptHeader{
		raw: b, myLBA: le.Uint64(b[24:]), altLBA: le.Uint64(b[32:]),
		firstUsable: le.Uint64(b[40:]), lastUsable: le.Uint64(b[48:]),
		entriesLBA: le.Uint64(b[72:]), entryCount: le.Uint32(b[80:]), entrySize: le.Uint32(b[84:]), entriesCRC: le.Uint32(b[88:]),
	}
	copy(h.diskGUID[:], b[56:72])
	if h.entrySize < 128 || h.entrySize&(h.entrySize-1) != 0 || h.entrySize > 4096 {
		return nil, fmt.Errorf("the %s GPT header has a partition entry size of %d (not 128 times a power of two)", where, h.entrySize)
	}
	if uint64(h.entryCount)*uint64(h.entrySize) > maxEntryArray {
		return nil, fmt.Errorf("the %s GPT header has %d partition entries of %d bytes, more than %d bytes", where, h.entryCount, h.entrySize, maxEntryArray)
	}
	return h, nil
}

// gptCRC is the header checksum: CRC32 of the header with its own CRC
// field taken as zero.
func gptCRC(hdr []byte) uint32 {
	c := crc32.NewIEEE()
	c.Write(hdr[:16])
	c.Write([]byte{0, 0, 0, 0})
	c.Write(hdr[20:])
	return c.Sum32()
}

// readGPT reads and cross-checks both headers and entry arrays.
func (t *Table) readGPT(r io.ReaderAt) error {
	lba := uint64(t.SectorSize)
	sectors := uint64(t.DiskSize) / lba
	readAt := func(what string, at, n uint64) ([]byte, error) {
		// at and n come from the image: checked against its size in
		// uint64 before the read, so nothing wraps or over-allocates.
		if at >= sectors || n > (sectors-at)*lba {
			return nil, fmt.Errorf("the %s at LBA %d lies beyond the end of the %d-sector image: the image is truncated or the GPT damaged", what, at, sectors)
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, int64(at*lba)); err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		return b, nil
	}
	raw, err := readAt("primary GPT header", 1, lba)
	if err != nil {
		return err
	}
	ph, err := parseGPTHeader(raw, "primary")
	if err != nil {
		return fmt.Errorf("%w; check the image with sgdisk -v", err)
	}
	if ph.myLBA != 1 {
		return fmt.Errorf("the primary GPT header says it is at LBA %d, not 1", ph.myLBA)
	}
	entrySectors := (uint64(ph.entryCount)*uint64(ph.entrySize) + lba - 1) / lba
	switch {
	case ph.firstUsable > ph.lastUsable+1 || ph.lastUsable >= sectors:
		return fmt.Errorf("the GPT's usable area (LBA %d-%d) does not fit the %d-sector image: the image is truncated or the GPT damaged", ph.firstUsable, ph.lastUsable, sectors)
	case ph.entriesLBA < 2 || ph.entriesLBA > ph.firstUsable || entrySectors > ph.firstUsable-ph.entriesLBA:
		return fmt.Errorf("the primary GPT entry array (LBA %d, %d sectors) overlaps the header or the usable area", ph.entriesLBA, entrySectors)
	case ph.altLBA <= ph.lastUsable || ph.altLBA >= sectors:
		return fmt.Errorf("the backup GPT header's location (LBA %d) is not between the usable area and the end of the %d-sector image", ph.altLBA, sectors)
	}
	entries, err := readAt("primary GPT entry array", ph.entriesLBA, uint64(ph.entryCount)*uint64(ph.entrySize))
	if err != nil {
		return err
	}
	if crc32.ChecksumIEEE(entries) != ph.entriesCRC {
		return errors.New("the primary GPT entry array fails its CRC32 check: it is damaged; check the image with sgdisk -v")
	}
	raw, err = readAt("backup GPT header", ph.altLBA, lba)
	if err != nil {
		return err
	}
	bh, err := parseGPTHeader(raw, "backup")
	if err != nil {
		return fmt.Errorf("%w; check the image with sgdisk -v", err)
	}
	if bh.myLBA != ph.altLBA || bh.altLBA != 1 || bh.firstUsable != ph.firstUsable || bh.lastUsable != ph.lastUsable ||
		bh.diskGUID != ph.diskGUID || bh.entryCount != ph.entryCount || bh.entrySize != ph.entrySize || bh.entriesCRC != ph.entriesCRC {
		return errors.New("the primary and backup GPT headers disagree; check the image with sgdisk -v")
	}
	if bh.entriesLBA <= ph.lastUsable || bh.entriesLBA >= ph.altLBA || entrySectors > ph.altLBA-bh.entriesLBA {
		return fmt.Errorf("the backup GPT entry array (LBA %d, %d sectors) is not between the usable area and the backup header", bh.entriesLBA, entrySectors)
	}
	backupEntries, err := readAt("backup GPT entry array", bh.entriesLBA, uint64(ph.entryCount)*uint64(ph.entrySize))
	if err != nil {
		return err
	}
	if !bytes.Equal(entries, backupEntries) {
		return errors.New("the backup GPT entry array differs from the primary one; check the image with sgdisk -v")
	}
	if ph.altLBA != sectors-1 {
		t.Warnings = append(t.Warnings, fmt.Sprintf("the backup GPT header is at LBA %d, not at the end of the disk (LBA %d)", ph.altLBA, sectors-1))
	}
	if t.DiskSize%int64(lba) != 0 {
		t.Warnings = append(t.Warnings, fmt.Sprintf("the image size (%d bytes) is not a multiple of the %d-byte sector", t.DiskSize, lba))
	}
	if !protective(t.mbr[:]) {
		t.Warnings = append(t.Warnings, "the GPT has no protective MBR (a partition of type 0xee in LBA 0)")
	}
	t.DiskID = strings.ToLower(guidString(ph.diskGUID[:]))
	t.UsableStart, t.UsableEnd = int64(ph.firstUsable*lba), int64((ph.lastUsable+1)*lba)
	t.gpt = &gptState{
		primary: ph.raw, backup: bh.raw, entries: entries, entryCount: ph.entryCount, entrySize: ph.entrySize,
		firstUsable: ph.firstUsable, lastUsable: ph.lastUsable, altLBA: ph.altLBA, entriesLBA: ph.entriesLBA, backupEntries: bh.entriesLBA,
	}
	for i := range int(ph.entryCount) {
		e := entries[i*int(ph.entrySize) : (i+1)*int(ph.entrySize)]
		if allZero(e[:16]) {
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if first > last || first < ph.firstUsable || last > ph.lastUsable {
			return fmt.Errorf("GPT partition %d (LBA %d-%d) is not inside the usable area (LBA %d-%d)", i+1, first, last, ph.firstUsable, ph.lastUsable)
		}
		typ := guidString(e[:16])
		t.Partitions = append(t.Partitions, Partition{
			Number: i + 1, Start: int64(first * lba), Size: int64((last - first + 1) * lba),
			Type: typ, TypeName: gptTypes[typ], Name: utf16Name(e[entryNameOff:min(len(e), entryNameOff+72)]),
			UUID: strings.ToLower(guidString(e[16:32])), Attributes: binary.LittleEndian.Uint64(e[48:]),
		})
	}
	return checkOverlap(t.Partitions)
}

// protective reports whether an MBR has the 0xee partition of a GPT.
func protective(mbr []byte) bool {
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return false
	}
	for i := range 4 {
		if mbr[446+16*i+4] == 0xee {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guidString formats a GUID as stored on disk (the first three fields
// little-endian), in upper case as sgdisk prints it.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16Name decodes a partition name (UTF-16LE, NUL-padded).
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// gptTypes names the partition types a system image is likely to hold
// (the names are sgdisk's and systemd's).
var gptTypes = map[string]string{
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM64)",
	"BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
}

// writeGPT puts the table's entry array and both headers into w, with
// the sizes and locations in st and fresh checksums.
func (st *gptState) write(w io.WriterAt, lba int64) error {
	le := binary.LittleEndian
	crc := crc32.ChecksumIEEE(st.entries)
	header := func(raw []byte, my, alt, entries uint64) []byte {
		h := slices.Clone(raw)
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[40:], st.firstUsable)
		le.PutUint64(h[48:], st.lastUsable)
		le.PutUint64(h[72:], entries)
		le.PutUint32(h[88:], crc)
		le.PutUint32(h[16:], gptCRC(h[:le.Uint32(h[12:])]))
		return h
	}
	for _, part := range []struct {
		b  []byte
		at uint64
	}{
		{st.entries, st.entriesLBA},
		{header(st.primary, 1, st.altLBA, st.entriesLBA), 1},
		{st.entries, st.backupEntries},
		{header(st.backup, st.altLBA, 1, st.backupEntries), st.altLBA},
	} {
		if _, err := w.WriteAt(part.b, int64(part.at)*lba); err != nil {
			return fmt.Errorf("write GPT: %w", err)
		}
	}
	return nil
}
