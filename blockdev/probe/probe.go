// Package probe recognises what a device or image holds from its
// signatures, as blkid does.
package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// probeSize covers every signature below: btrfs's superblock at 64 KiB
// is the farthest, LUKS2's secondary header copy aside.
const probeSize = 0x10000 + 4096

// SecondaryOffsets are where a LUKS2 secondary header can start: right
// after a primary of each allowed metadata size.
var SecondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}

// Describe names what the start of a device holds, as blkid would
// report it, or returns "" when it finds nothing it knows. It looks for
// the formats an admin is most likely to destroy by mistake: LUKS
// headers (either copy), ext2/3/4, XFS, Btrfs, swap, FAT and partition
// tables. A device of random or zero bytes has none of them.
func Describe(dev io.ReaderAt) (string, error) {
	buf := make([]byte, probeSize)
	n, err := dev.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	b := buf[:n]
	at := func(off int, magic string) bool {
		return off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case at(0, "LUKS\xba\xbe"):
		if len(b) >= 8 && binary.BigEndian.Uint16(b[6:8]) == 2 {
			return "a LUKS2 header", nil
		}
		return "a LUKS1 header", nil
	case at(0, "XFSB"):
		return "an XFS file system", nil
	case at(0x10040, "_BHRfS_M"):
		return "a Btrfs file system", nil
	case len(b) >= 1024+58 && binary.LittleEndian.Uint16(b[1024+56:]) == 0xEF53:
		return "an ext2/3/4 file system", nil
	}
	for _, page := range []int{4096, 8192, 16384, 65536} {
		if at(page-10, "SWAPSPACE2") || at(page-10, "SWAP-SPACE") {
			return "a swap area", nil
		}
	}
	if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA {
		if at(54, "FAT1") || at(82, "FAT32") || at(3, "MSDOS") || at(3, "mkfs.fat") || at(3, "mkdosfs") {
			return "a FAT file system", nil
		}
		if at(512, "EFI PART") {
			return "a GPT partition table", nil
		}
		return "an MBR partition table", nil
	}
	if at(512, "EFI PART") {
		return "a GPT partition table", nil
	}
	// A damaged primary LUKS2 header leaves the secondary copy, which
	// cryptsetup would still open.
	magic := make([]byte, 6)
	for _, off := range SecondaryOffsets {
		if _, err := dev.ReadAt(magic, off); err != nil {
			break
		}
		if bytes.Equal(magic, []byte("SKUL\xba\xbe")) {
			return "a LUKS2 header (secondary copy)", nil
		}
	}
	return "", nil
}
