package crypt_test

import (
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"testing"
)

// writeGPT makes disk a GPT-partitioned image holding each of parts (image
// files whose sizes are multiples of 512) as one partition, so the VM sees
// them as /dev/vdX1, /dev/vdX2, ... without loop devices.
func writeGPT(t *testing.T, disk string, parts []string) {
	t.Helper()
	const (
		lba     = 512
		entries = 128
		entSize = 128
		align   = 2048 // sectors
	)
	f, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table := make([]byte, entries*entSize)
	next := uint64(align)
	for i, p := range parts {
		src, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := src.Stat()
		n := uint64(fi.Size()) / lba
		if _, err := io.Copy(io.NewOffsetWriter(f, int64(next*lba)), src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		e := table[i*entSize:]
		copy(e[0:16], []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}) // Linux data
		rand.Read(e[16:32])
		binary.LittleEndian.PutUint64(e[32:], next)
		binary.LittleEndian.PutUint64(e[40:], next+n-1)
		next += (n + align - 1) / align * align
	}
	total := next + 34
	if err := f.Truncate(int64(total * lba)); err != nil {
		t.Fatal(err)
	}
	mbr := make([]byte, lba)
	pe := mbr[446:]
	pe[4] = 0xee
	binary.LittleEndian.PutUint32(pe[8:], 1)
	binary.LittleEndian.PutUint32(pe[12:], uint32(min(total-1, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa
	f.WriteAt(mbr, 0)
	var diskGUID [16]byte
	rand.Read(diskGUID[:])
	header := func(my, alt, entLBA uint64) []byte {
		h := make([]byte, lba)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], total-34)
		copy(h[56:72], diskGUID[:])
		binary.LittleEndian.PutUint64(h[72:], entLBA)
		binary.LittleEndian.PutUint32(h[80:], entries)
		binary.LittleEndian.PutUint32(h[84:], entSize)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(table))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	f.WriteAt(header(1, total-1, 2), lba)
	f.WriteAt(table, 2*lba)
	f.WriteAt(table, int64((total-33)*lba))
	f.WriteAt(header(total-1, 1, total-33), int64((total-1)*lba))
}
