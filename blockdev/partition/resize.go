package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// NoRoomError is the refusal to grow a partition that is followed by
// another one with too little unallocated space in between.
type NoRoomError struct {
	Number int   // the partition
	Next   int   // the partition after it
	Free   int64 // unallocated bytes between them
	Grow   int64 // bytes the partition must grow by
}

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("partition %d is not the last one and has %d bytes free after it (before partition %d) but must grow by %d bytes",
		e.Number, e.Free, e.Next, e.Grow)
}

// Resize returns a copy of the table in which partition n is size bytes
// long (rounded up to whole sectors), at the same start. It grows into
// the unallocated space after the partition; when that is too little and
// the partition is the last one, the disk grows by the rest, and a last
// partition that ended at the end of the usable area keeps ending there,
// growing or shrinking the disk with it (see the package comment). The
// new table's DiskSize is the size the image must have.
func (t *Table) Resize(n int, size int64) (*Table, error) {
	p, err := t.Partition(n)
	if err != nil {
		return nil, err
	}
	if p.Extended {
		return nil, fmt.Errorf("partition %d is an extended partition, a container of logical partitions", n)
	}
	ss := int64(t.SectorSize)
	if size <= 0 {
		return nil, fmt.Errorf("partition %d: a size of %d bytes", n, size)
	}
	size = (size + ss - 1) / ss * ss
	end := p.Start + size
	var next *Partition
	for i, q := range t.Partitions {
		if q.Start > p.Start && (next == nil || q.Start < next.Start) {
			next = &t.Partitions[i]
		}
	}
	nt := t.clone()
	switch {
	case next != nil && end > next.Start:
		return nil, &NoRoomError{Number: n, Next: next.Number, Free: next.Start - p.End(), Grow: size - p.Size}
	case next == nil && (end > t.UsableEnd || p.End() == t.UsableEnd):
		delta := end - t.UsableEnd
		nt.UsableEnd += delta
		nt.DiskSize += delta
	}
	for i := range nt.Partitions {
		if nt.Partitions[i].Number == n {
			nt.Partitions[i].Size = size
		}
	}
	switch t.Scheme {
	case GPT:
		lba := uint64(ss)
		g := nt.gpt
		delta := int64(nt.UsableEnd/ss) - int64(g.lastUsable+1)
		g.lastUsable = uint64(int64(g.lastUsable) + delta)
		g.altLBA = uint64(int64(g.altLBA) + delta)
		g.backupEntries = uint64(int64(g.backupEntries) + delta)
		e := g.entries[(n-1)*int(g.entrySize):]
		binary.LittleEndian.PutUint64(e[40:], uint64(end)/lba-1)
		if delta != 0 {
			nt.fitProtective(t)
		}
	case MBR:
		sectors := size / mbrSector
		if sectors > 0xffffffff {
			return nil, fmt.Errorf("partition %d would be %d sectors long, more than an MBR can record (2^32-1); use a GPT", n, sectors)
		}
		e := nt.mbr[446+16*(n-1):]
		binary.LittleEndian.PutUint32(e[12:], uint32(sectors))
		updateCHS(e[5:8], uint64(p.End()/mbrSector-1), uint64(end/mbrSector-1))
	}
	return nt, nil
}

// fitProtective keeps a protective MBR covering the whole disk when it
// did before (a hybrid MBR's other entries are left alone).
func (nt *Table) fitProtective(old *Table) {
	cover := func(t *Table) uint32 {
		return uint32(min(t.DiskSize/int64(t.SectorSize)-1, 0xffffffff))
	}
	for i := range 4 {
		e := nt.mbr[446+16*i:]
		if e[4] == 0xee && binary.LittleEndian.Uint32(e[8:]) == 1 && binary.LittleEndian.Uint32(e[12:]) == cover(old) {
			binary.LittleEndian.PutUint32(e[12:], cover(nt))
			updateCHS(e[5:8], uint64(cover(old)), uint64(cover(nt)))
		}
	}
}

// updateCHS moves an MBR entry's cylinder-head-sector end address from
// one LBA to another when it holds the address sfdisk and fdisk compute
// (255 heads, 63 sectors per track, the maximum beyond 1023 cylinders),
// and otherwise leaves it: the kernel and today's tools go by the LBA
// fields, and some tools write the maximum everywhere (a GPT's
// protective entry from sfdisk), which must stay as it is.
func updateCHS(b []byte, from, to uint64) {
	if c := chs(from); bytes.Equal(b, c[:]) {
		c = chs(to)
		copy(b, c[:])
	}
}

func chs(lba uint64) [3]byte {
	const heads, spt = 255, 63
	c, h, s := lba/(heads*spt), (lba/spt)%heads, lba%spt+1
	if c > 1023 {
		c, h, s = 1023, 254, 63
	}
	return [3]byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

func (t *Table) clone() *Table {
	nt := *t
	nt.Partitions = slices.Clone(t.Partitions)
	nt.Warnings = slices.Clone(t.Warnings)
	if t.gpt != nil {
		g := *t.gpt
		g.entries = slices.Clone(g.entries)
		nt.gpt = &g
	}
	return &nt
}

// Write puts the table into a disk image of DiskSize bytes: the MBR
// (the protective one of a GPT) and, for a GPT, both headers and entry
// arrays with fresh checksums. Nothing else on the disk is touched.
func (t *Table) Write(w io.WriterAt) error {
	if _, err := w.WriteAt(t.mbr[:], 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	if t.gpt != nil {
		return t.gpt.write(w, int64(t.SectorSize))
	}
	return nil
}
