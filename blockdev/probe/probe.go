// Package probe recognises what a device or image holds from its
// signatures, as blkid does, so that kmsagent never writes a header over
// something it did not recognise as its own.
//
// Scan reports every signature it finds, not the first: a device that
// holds a LUKS2 header and, say, an LVM2 label is ambiguous, and only the
// full list lets the caller refuse it instead of guessing (blkid likewise
// reports an "ambivalent result" for two file systems rather than pick
// one). The formats
// are the ones an admin is most likely to lose by mistake: LUKS headers
// (both LUKS2 copies), LVM2, MD RAID, bcache, ZFS, ext2/3/4, XFS, Btrfs,
// FAT, ISO 9660, swap and partition tables.
//
// Each signature is checked by its magic and, where a magic alone is
// short enough to turn up in random or encrypted data, by a field or two
// that must agree with where it was found (blkid's checks, simplified).
// Scan also reports the smallest I/O unit a file system or partition
// table can be used with (BlockSize): a file system with 1024-byte blocks
// cannot be mounted from a device with 4096-byte logical sectors.
//
// Every byte read here comes from an untrusted device; nothing is
// trusted beyond bounds-checked reads of the probe buffer.
package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
)

// PrefixSize is how much of the start of a device Scan reads at once: it
// covers every signature near the start (the second ZFS label's
// uberblocks end at 512 KiB). A caller that can only peek at a stream
// gives Scan at least this much of it.
const PrefixSize = 512 << 10

// SecondaryOffsets are where a LUKS2 secondary header can start: right
// after a primary of each allowed metadata size.
var SecondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}

// Types of signature, as blkid names them (its TYPE tag), for the ones
// callers test for.
const (
	TypeLUKS = "crypto_LUKS"
	TypeDOS  = "dos" // an MBR partition table
	TypeGPT  = "gpt"
)

// Signature is one format found on a device.
type Signature struct {
	Type string // blkid's TYPE name: crypto_LUKS, LVM2_member, ext4, xfs, ...
	Name string // what it is, for people: "an LVM2 physical volume"
	// Offset is where its magic is, as wipefs lists it (and takes with
	// --offset to erase just that signature).
	Offset int64
	// Version is a LUKS header's version; 0 for other types.
	Version int
	// Secondary marks a LUKS2 secondary header copy.
	Secondary bool
	// BlockSize is the smallest logical block size of a device the
	// content can be used on: a file system's block or sector size, a
	// GPT's LBA size, a swap area's page size. 0 when the format does not
	// say (an MBR's LBA size, for one, is not recorded in it).
	BlockSize int
	// Len is how many bytes from Offset hold the signature: zeroing them
	// erases it, as wipefs does (a ZFS label's whole uberblock ring, the
	// magic of anything else).
	Len int
}

// String is the name and where it is, in wipefs's notation.
func (s Signature) String() string {
	return fmt.Sprintf("%s (at offset %#x)", s.Name, s.Offset)
}

// Scan returns the signatures on dev, ordered by offset. size is the
// size of dev, or -1 when unknown (a stream's prefix): the signatures
// kept at the end of a device (MD RAID 0.90 and 1.0, ZFS's last labels)
// are then not looked for.
func Scan(dev io.ReaderAt, size int64) ([]Signature, error) {
	n := int64(PrefixSize)
	if size >= 0 && size < n {
		n = size
	}
	buf := make([]byte, n)
	got, err := dev.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("probe: %w", err)
	}
	p := &prober{b: buf[:got]}
	p.start()
	if err := p.luks2Secondary(dev); err != nil {
		return nil, err
	}
	if size > 0 {
		if err := p.end(dev, size); err != nil {
			return nil, err
		}
	}
	return p.result(), nil
}

// prober collects signatures from the probe buffer b, the start of the
// device.
type prober struct {
	b     []byte
	found []Signature
}

func (p *prober) add(s Signature) { p.found = append(p.found, s) }

// at reports whether magic is at off in b.
func at(b []byte, off int, magic string) bool {
	return off >= 0 && off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
}

// has reports whether b holds n bytes at off.
func has(b []byte, off, n int) bool { return off >= 0 && n >= 0 && off+n <= len(b) }

func le16(b []byte, off int) int    { return int(binary.LittleEndian.Uint16(b[off:])) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// pow2In reports whether v is a power of two in [lo, hi].
func pow2In(v uint64, lo, hi uint64) bool {
	return v >= lo && v <= hi && bits.OnesCount64(v) == 1
}

func (p *prober) start() {
	b := p.b
	p.luks(b)
	p.lvm2(b)
	p.md1(b, 0, "1.1")
	p.md1(b, 4096, "1.2")
	if at(b, 4096+24, bcacheMagic) {
		p.add(Signature{Type: "bcache", Name: "a bcache device", Offset: 4096 + 24, Len: len(bcacheMagic)})
	}
	p.zfs(b, 0, 0)
	p.zfs(b, 0, 256<<10)
	p.xfs(b)
	p.ext(b)
	p.btrfs(b)
	p.iso9660(b)
	p.swap(b)
	p.dos(b)
	for _, lba := range []int{512, 4096} {
		if at(b, lba, "EFI PART") {
			p.add(Signature{Type: TypeGPT, Name: fmt.Sprintf("a GPT partition table (%d-byte sectors)", lba), Offset: int64(lba), BlockSize: lba, Len: 8})
		}
	}
}

func (p *prober) luks(b []byte) {
	if !at(b, 0, "LUKS\xba\xbe") || !has(b, 6, 2) {
		return
	}
	v := int(binary.BigEndian.Uint16(b[6:]))
	name := fmt.Sprintf("a LUKS header of version %d", v)
	if v == 1 || v == 2 {
		name = fmt.Sprintf("a LUKS%d header", v)
	}
	p.add(Signature{Type: TypeLUKS, Name: name, Offset: 0, Version: v, Len: 6})
}

// luks2Secondary looks for a LUKS2 secondary header copy, which
// cryptsetup would still open when the primary is damaged or gone.
func (p *prober) luks2Secondary(dev io.ReaderAt) error {
	hdr := make([]byte, 8)
	for _, off := range SecondaryOffsets {
		n, err := dev.ReadAt(hdr, off)
		if n < len(hdr) {
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("probe: %w", err)
			}
			break
		}
		if at(hdr, 0, "SKUL\xba\xbe") {
			v := int(binary.BigEndian.Uint16(hdr[6:]))
			p.add(Signature{Type: TypeLUKS, Name: "a LUKS2 header (secondary copy)", Offset: off, Version: v, Secondary: true, Len: 6})
		}
	}
	return nil
}

// lvm2 finds an LVM2 physical volume label, which pvcreate writes into
// one of the first four 512-byte sectors (the second by default).
func (p *prober) lvm2(b []byte) {
	for sector := 0; sector < 4; sector++ {
		off := sector * 512
		if at(b, off, "LABELONE") && at(b, off+24, "LVM2 001") && le64(b, off+8) == uint64(sector) {
			p.add(Signature{Type: "LVM2_member", Name: "an LVM2 physical volume", Offset: int64(off + 24), Len: 8})
		}
	}
}

const (
	mdMagic     = 0xa92b4efc
	bcacheMagic = "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"
)

// md1 finds an MD RAID superblock of format 1.x at off: its magic, major
// version 1, and the superblock's own record of where it is.
func (p *prober) md1(b []byte, off int, format string) {
	if !has(b, off, 136) || le32(b, off) != mdMagic || le32(b, off+4) != 1 || le64(b, off+128) != uint64(off)/512 {
		return
	}
	p.add(Signature{Type: "linux_raid_member", Name: "an MD RAID member (superblock " + format + ")", Offset: int64(off), Len: 4})
}

// md090 finds an MD RAID 0.90 superblock at off, written in the byte
// order of the host that made it.
func (p *prober) md090(b []byte, off int64) {
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		if len(b) >= 12 && bo.Uint32(b) == mdMagic && bo.Uint32(b[4:]) == 0 && bo.Uint32(b[8:]) == 90 {
			p.add(Signature{Type: "linux_raid_member", Name: "an MD RAID member (superblock 0.90)", Offset: off, Len: 4})
			return
		}
	}
}

// zfs finds a ZFS label at off (relative to b, which starts at device
// offset base) by its uberblocks: 1 KiB slots from 128 KiB into the
// label (larger slots start on 1 KiB boundaries too), each starting with
// a magic number in the byte order of the host, then a plausible version.
func (p *prober) zfs(b []byte, base, off int64) {
	const ubMagic = 0x00bab10c
	ring := off + 128<<10
	for slot := ring; slot < off+256<<10; slot += 1 << 10 {
		i := int(slot)
		if !has(b, i, 16) {
			return
		}
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			if v := bo.Uint64(b[i+8:]); bo.Uint64(b[i:]) == ubMagic && v >= 1 && v <= 5000 {
				// Any uberblock in the ring makes the label; the ring
				// is what erasing it takes.
				p.add(Signature{Type: "zfs_member", Name: "a ZFS pool member", Offset: base + ring, Len: 128 << 10})
				return
			}
		}
	}
}

// xfs finds an XFS superblock. An XFS file system does its I/O in units
// of its sector size (sb_sectsize), which the device's logical block size
// must not exceed.
func (p *prober) xfs(b []byte) {
	if !at(b, 0, "XFSB") || !has(b, 104, 0) {
		return
	}
	blockSize := uint64(binary.BigEndian.Uint32(b[4:]))
	sectSize := uint64(binary.BigEndian.Uint16(b[102:]))
	if !pow2In(blockSize, 512, 65536) || !pow2In(sectSize, 512, 32768) || sectSize > blockSize {
		return
	}
	p.add(Signature{Type: "xfs", Name: fmt.Sprintf("an XFS file system (%d-byte sectors)", sectSize), BlockSize: int(sectSize), Len: 4})
}

// Feature bits of ext2/3/4 that tell them apart, as blkid does.
const (
	extCompatHasJournal   = 0x4
	extIncompatJournalDev = 0x8
	extIncompatExt3       = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
	extROCompatExt3       = 0x1 | 0x2 | 0x4  // sparse_super, large_file, btree_dir
)

// ext finds an ext2/3/4 superblock (1 KiB in) and its block size, the
// unit of all its I/O.
func (p *prober) ext(b []byte) {
	const sb = 1024
	if !has(b, sb, 0x68) || le16(b, sb+0x38) != 0xEF53 {
		return
	}
	logBlock := le32(b, sb+0x18)
	if logBlock > 6 { // 1 KiB .. 64 KiB
		return
	}
	compat, incompat, roCompat := le32(b, sb+0x5C), le32(b, sb+0x60), le32(b, sb+0x64)
	typ := "ext2"
	switch {
	case incompat&extIncompatJournalDev != 0:
		typ = "jbd"
	case incompat&^extIncompatExt3 != 0 || roCompat&^extROCompatExt3 != 0:
		typ = "ext4"
	case compat&extCompatHasJournal != 0:
		typ = "ext3"
	}
	size := 1024 << logBlock
	name := fmt.Sprintf("an %s file system (%d-byte blocks)", typ, size)
	if typ == "jbd" {
		name = fmt.Sprintf("an ext3/4 external journal (%d-byte blocks)", size)
	}
	p.add(Signature{Type: typ, Name: name, Offset: sb + 0x38, BlockSize: size, Len: 2})
}

// btrfs finds a Btrfs superblock (64 KiB in) and its sector size.
func (p *prober) btrfs(b []byte) {
	const sb = 0x10000
	if !at(b, sb+0x40, "_BHRfS_M") || !has(b, sb+0x94, 0) {
		return
	}
	sector := uint64(le32(b, sb+0x90))
	if !pow2In(sector, 512, 65536) {
		return
	}
	p.add(Signature{Type: "btrfs", Name: fmt.Sprintf("a Btrfs file system (%d-byte sectors)", sector), Offset: sb + 0x40, BlockSize: int(sector), Len: 8})
}

// iso9660 finds an ISO 9660 primary volume descriptor (32 KiB in) and
// its logical block size (both byte orders recorded; 2048 in practice).
func (p *prober) iso9660(b []byte) {
	const vd = 0x8000
	if !at(b, vd+1, "CD001") || !has(b, vd+132, 0) {
		return
	}
	size := uint64(le16(b, vd+128))
	if !pow2In(size, 512, 32768) || int(binary.BigEndian.Uint16(b[vd+130:])) != int(size) {
		size = 2048
	}
	p.add(Signature{Type: "iso9660", Name: "an ISO 9660 file system", Offset: vd + 1, BlockSize: int(size), Len: 5})
}

// swap finds a swap area, whose signature ends the first page; its page
// size is the unit the kernel pages in and out.
func (p *prober) swap(b []byte) {
	for _, page := range []int{4096, 8192, 16384, 65536} {
		for _, magic := range []string{"SWAPSPACE2", "SWAP-SPACE"} {
			if at(b, page-10, magic) {
				p.add(Signature{Type: "swap", Name: "a swap area", Offset: int64(page - 10), BlockSize: page, Len: 10})
			}
		}
	}
}

// dos finds a FAT boot sector or, failing that, an MBR partition table;
// both end their first sector with 55 AA.
func (p *prober) dos(b []byte) {
	if !has(b, 0, 512) || b[510] != 0x55 || b[511] != 0xAA {
		return
	}
	for _, m := range []struct {
		off   int
		magic string
	}{{82, "FAT32"}, {54, "FAT1"}, {3, "MSDOS"}, {3, "mkfs.fat"}, {3, "mkdosfs"}} {
		if !at(b, m.off, m.magic) {
			continue
		}
		// The bytes per sector are the unit of all FAT I/O; Linux refuses
		// a FAT whose sector is smaller than the device's.
		bps := uint64(le16(b, 11))
		if !pow2In(bps, 512, 4096) {
			return
		}
		p.add(Signature{Type: "vfat", Name: fmt.Sprintf("a FAT file system (%d-byte sectors)", bps), Offset: int64(m.off), BlockSize: int(bps), Len: len(m.magic)})
		return
	}
	// Every partition entry's boot indicator is 0x00 or 0x80: random
	// data ending in 55 AA rarely passes that too.
	for e := 446; e < 510; e += 16 {
		if b[e] != 0 && b[e] != 0x80 {
			return
		}
	}
	p.add(Signature{Type: TypeDOS, Name: "an MBR partition table", Offset: 510, Len: 2})
}

// end looks for the signatures kept at the end of a device.
func (p *prober) end(dev io.ReaderAt, size int64) error {
	read := func(off, n int64) ([]byte, error) {
		if off < 0 || off+n > size {
			return nil, nil
		}
		b := make([]byte, n)
		if got, err := dev.ReadAt(b, off); got < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, fmt.Errorf("probe: %w", err)
		}
		return b, nil
	}
	// MD 1.0: 8 KiB before the end, on a 4 KiB boundary.
	if off := (size/512 - 16) &^ 7 * 512; off > 4096 { // not where 1.1 or 1.2 are
		b, err := read(off, 136)
		if err != nil {
			return err
		}
		if b != nil && le32(b, 0) == mdMagic && le32(b, 4) == 1 && le64(b, 128) == uint64(off)/512 {
			p.add(Signature{Type: "linux_raid_member", Name: "an MD RAID member (superblock 1.0)", Offset: off, Len: 4})
		}
	}
	// MD 0.90: in the last whole 64 KiB block.
	if off := size&^0xFFFF - 0x10000; off >= 0 {
		b, err := read(off, 12)
		if err != nil {
			return err
		}
		p.md090(b, off)
	}
	// ZFS keeps labels 2 and 3 in the last 512 KiB, on 256 KiB boundaries.
	for _, back := range []int64{512 << 10, 256 << 10} {
		if off := size&^(256<<10-1) - back; off >= 512<<10 { // past labels 0 and 1
			b, err := read(off, 256<<10)
			if err != nil {
				return err
			}
			p.zfs(b, off, 0)
		}
	}
	return nil
}

// result drops what only looks like a signature because it lies in a
// LUKS header's own fields, and orders the rest by offset.
//
// The first 512 bytes of a LUKS2 binary header (592 of a LUKS1 header)
// hold its label, checksum algorithm, salt, UUID, subsystem and checksum:
// the last two bytes of a SHA-512 checksum are 55 AA once in 65536
// headers, and a label can spell "FAT32". Anything there belongs to the
// LUKS header. The rest of a LUKS2 binary header (to 4 KiB) is zero
// padding covered by the checksum, so a signature there (an LVM2 label
// in sector 1, an ext4 superblock at 1 KiB, a swap signature at 4086) is
// real and makes the device ambiguous. The JSON areas are not excluded:
// the binary magics found after 4 KiB cannot be JSON text, and a text
// magic there would take a deliberately crafted token; either way the
// result is a refusal, never a write.
func (p *prober) result() []Signature {
	type span struct{ lo, hi int64 }
	var owned []span
	for _, s := range p.found {
		if s.Type != TypeLUKS {
			continue
		}
		n := int64(512)
		if s.Version == 1 {
			n = 592
		}
		owned = append(owned, span{s.Offset, s.Offset + n})
	}
	out := p.found[:0]
	for _, s := range p.found {
		inLUKS := false
		for _, o := range owned {
			if s.Type != TypeLUKS && s.Offset >= o.lo && s.Offset+int64(s.Len) <= o.hi {
				inLUKS = true
			}
		}
		if !inLUKS {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b Signature) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	return out
}

// Names lists the signatures for a message: "an ext4 file system (at
// offset 0x438) and a swap area (at offset 0xff6)".
func Names(sigs []Signature) string {
	var b strings.Builder
	for i, s := range sigs {
		switch {
		case i == 0:
		case i == len(sigs)-1:
			b.WriteString(" and ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(s.String())
	}
	return b.String()
}
