package crypt

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/keyring"
	"kmsagent/blockdev/luks2"
)

const sector = 512

// TableOptions are the knobs of the dm-crypt table that are not in the
// header.
type TableOptions struct {
	AllowDiscards bool
}

// CryptTarget returns the dm-crypt target cryptsetup would load for seg
// on a backing device of devSize bytes whose number is backing, with the
// key referenced as the logon key keyring.Description(name) of keySize
// bytes.
func CryptTarget(seg luks2.SegmentInfo, devSize int64, backing uint64, name string, keySize int, o TableOptions) (dm.Target, error) {
	if seg.Integrity != "" && seg.Integrity != "none" {
		return dm.Target{}, fmt.Errorf("segment uses integrity %q (dm-integrity), which kmsagent does not set up; open it with cryptsetup", seg.Integrity)
	}
	if seg.Offset%sector != 0 {
		return dm.Target{}, fmt.Errorf("segment offset %d is not a multiple of %d", seg.Offset, sector)
	}
	ss := seg.SectorSize
	if ss == 0 {
		ss = sector
	}
	if ss%sector != 0 {
		return dm.Target{}, fmt.Errorf("segment sector size %d is not a multiple of %d", ss, sector)
	}
	// The header is on the same device: data that starts inside it would
	// be written over it. cryptsetup refuses offset 0 the same way.
	if seg.Offset == 0 || seg.Offset < seg.MetadataEnd {
		return dm.Target{}, fmt.Errorf("data segment at offset %d overlaps the LUKS2 header and keyslot area (which end at %d)", seg.Offset, seg.MetadataEnd)
	}
	if devSize < 0 || uint64(devSize) <= seg.Offset {
		return dm.Target{}, fmt.Errorf("device of %d bytes ends before the data segment at %d", devSize, seg.Offset)
	}
	// Compared as a remainder, so that no offset or size up to 2^64-1
	// can wrap the sum.
	avail := uint64(devSize) - seg.Offset
	size := seg.Size
	if seg.Dynamic {
		size = avail
	} else if size > avail {
		return dm.Target{}, fmt.Errorf("data segment of %d bytes at offset %d runs past the end of the %d-byte device", size, seg.Offset, devSize)
	}
	// dm-crypt needs whole encryption sectors; a tail shorter than one
	// is not part of the volume (cryptsetup rounds down the same way).
	size -= size % uint64(ss)
	if size == 0 {
		return dm.Target{}, fmt.Errorf("data segment holds no whole %d-byte sector", ss)
	}
	p := dm.CryptParams{
		Cipher:        seg.Encryption,
		KeySize:       keySize,
		KeyType:       "logon",
		KeyDesc:       keyring.Description(name),
		IVOffset:      seg.IVTweak,
		Device:        fmt.Sprintf("%d:%d", unix.Major(backing), unix.Minor(backing)),
		Offset:        seg.Offset / sector,
		AllowDiscards: o.AllowDiscards,
	}
	if ss != sector {
		// No iv_large_sectors: cryptsetup never sets it for LUKS2, whose
		// IVs count 512-byte units at every sector size (sector k of
		// 4096 bytes has IV 8k). Setting it would read a volume made by
		// cryptsetup or kmsagent image encrypt as garbage.
		p.SectorSize = ss
	}
	return p.Target(size / sector)
}

// ourTable reports whether a table is a kmsagent dm-crypt mapping: one
// crypt target whose key is the logon key kmsagent:<name>. Close refuses
// to take down anything else.
func ourTable(name string, targets []dm.Target) (dm.CryptParams, error) {
	if len(targets) != 1 || targets[0].Type != dm.CryptTarget {
		return dm.CryptParams{}, fmt.Errorf("%s is not a kmsagent volume (not a single dm-crypt target)", name)
	}
	p, err := dm.ParseCryptParams(targets[0].Params)
	if err != nil {
		return p, err
	}
	if p.InlineKey || p.KeyType != "logon" || !strings.HasPrefix(p.KeyDesc, keyring.Prefix) {
		return p, fmt.Errorf("%s is not a kmsagent volume (its key is not a %s logon key); close it with cryptsetup", name, keyring.Prefix)
	}
	return p, nil
}
