package luks2

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

const (
	binHeaderSize   = 4096
	sectorSize      = 512
	maxKeyslotsSize = 128 << 20 // cryptsetup's LUKS2_MAX_KEYSLOTS_SIZE
)

// metadataSizes are the allowed sizes of one metadata copy (binary header
// plus JSON area). They double as the offsets at which a secondary header
// is looked for when the primary cannot be read.
var metadataSizes = []uint64{
	0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
}

func validMetadataSize(n uint64) bool {
	for _, s := range metadataSizes {
		if n == s {
			return true
		}
	}
	return false
}

type interval struct {
	what         string
	offset, size uint64 // size 0: to the end of the device
}

func (iv interval) end() uint64 { return iv.offset + iv.size }

// validate checks a parsed header against the rules of cryptsetup's
// validator (config, tokens, digests, segments, keyslots, areas, JSON
// size), plus a few that keep this package from reading or writing in the
// wrong place (sector-aligned keyslot areas big enough for their key
// material). hdrSize is the size of one metadata copy.
func (m *metadata) validate(hdrSize uint64) error {
	if err := m.validateConfig(hdrSize); err != nil {
		return err
	}
	for _, id := range sortedKeys(m.tokens) {
		for i, k := range m.tokens[id].keyslots {
			if _, ok := m.keyslots[k]; !ok {
				return invalid(fmt.Sprintf("tokens.%d.keyslots[%d]", id, i), "keyslot %d does not exist", k)
			}
		}
	}
	for _, id := range sortedKeys(m.digests) {
		d := m.digests[id]
		for i, k := range d.keyslots {
			if _, ok := m.keyslots[k]; !ok {
				return invalid(fmt.Sprintf("digests.%d.keyslots[%d]", id, i), "keyslot %d does not exist", k)
			}
		}
		for i, s := range d.segments {
			if _, ok := m.segments[s]; !ok {
				return invalid(fmt.Sprintf("digests.%d.segments[%d]", id, i), "segment %d does not exist", s)
			}
		}
	}
	if err := m.validateSegments(); err != nil {
		return err
	}
	if err := m.validateReencryptSegments(); err != nil {
		return err
	}
	if err := m.validateKeyslots(); err != nil {
		return err
	}
	if err := m.validateAreas(hdrSize); err != nil {
		return err
	}
	text := m.root.marshal()
	depth, err := jsonDepth(text)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidHeader, err)
	}
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: JSON values nest %d levels deep; cryptsetup's parser (json-c) reads at most %d", ErrInvalidHeader, depth, maxJSONDepth)
	}
	// The JSON text plus at least one NUL must fit the JSON area.
	if n := uint64(len(text)); n >= m.config.jsonSize {
		return fmt.Errorf("%w: JSON metadata is %d bytes, the JSON area holds %d", ErrNoSpace, n, m.config.jsonSize-1)
	}
	return nil
}

func (m *metadata) validateConfig(hdrSize uint64) error {
	c := m.config
	if c.jsonSize != hdrSize-binHeaderSize {
		return invalid("config.json_size", "%d does not match the binary header (metadata size %d, JSON area %d)",
			c.jsonSize, hdrSize, hdrSize-binHeaderSize)
	}
	if !validMetadataSize(c.jsonSize + binHeaderSize) {
		return invalid("config.json_size", "%d is not an allowed JSON area size", c.jsonSize)
	}
	if c.keyslotsSize%4096 != 0 {
		return invalid("config.keyslots_size", "%d is not a multiple of 4096", c.keyslotsSize)
	}
	if c.keyslotsSize > maxKeyslotsSize {
		return invalid("config.keyslots_size", "%d is larger than %d", c.keyslotsSize, maxKeyslotsSize)
	}
	// The keyslot area lies between the two metadata copies and the data;
	// a detached header (data offset 0) has no such bound.
	if off := m.firstDataOffset(); off != 0 && (off < c.keyslotsSize || off-c.keyslotsSize < 2*hdrSize) {
		return invalid("config.keyslots_size", "%d does not fit between the metadata (%d bytes) and the data offset %d",
			c.keyslotsSize, 2*hdrSize, off)
	}
	return nil
}

func (m *metadata) firstDataOffset() uint64 {
	var min uint64
	first := true
	for _, s := range m.segments {
		if first || s.offset < min {
			min, first = s.offset, false
		}
	}
	return min
}

func (m *metadata) validateSegments() error {
	if len(m.segments) == 0 {
		return invalid("segments", "no segment")
	}
	ids := sortedKeys(m.segments)
	firstBackup := -1
	for _, id := range ids {
		s := m.segments[id]
		path := fmt.Sprintf("segments.%d", id)
		// dm devices work in 512-byte sectors.
		if s.offset%sectorSize != 0 {
			return invalid(path+".offset", "%d is not aligned to %d bytes", s.offset, sectorSize)
		}
		if s.size%sectorSize != 0 {
			return invalid(path+".size", "%d is not aligned to %d bytes", s.size, sectorSize)
		}
		// Segment ends are compared and used for I/O: they must not wrap.
		if s.offset > math.MaxUint64-s.size {
			return invalid(path, "offset %d + size %d overflows 64 bits", s.offset, s.size)
		}
		if s.backup() {
			if firstBackup < 0 {
				firstBackup = id
			}
		} else if firstBackup >= 0 {
			return invalid(path, "regular segment after backup segment %d", firstBackup)
		}
		if s.typ != "crypt" {
			continue
		}
		if !validSectorSize(s.sectorSize) {
			return invalid(path+".sector_size", "%d is not a power of two from 512 to 4096", s.sectorSize)
		}
		if s.size%uint64(s.sectorSize) != 0 {
			return invalid(path+".size", "%d is not a multiple of the sector size %d", s.size, s.sectorSize)
		}
		if !m.segmentHasDigest(id) {
			return invalid(path, "no digest is assigned to the segment")
		}
	}
	if firstBackup == 0 {
		return invalid("segments", "no regular segment")
	}
	// Ids must run 0..n-1 without gaps.
	for i, id := range ids {
		if id != i {
			return invalid("segments", "gap at segment %d", i)
		}
	}
	regular := len(ids)
	if firstBackup > 0 {
		regular = firstBackup
	}
	var ivs []interval
	for i := 0; i < regular; i++ {
		s := m.segments[i]
		if s.dynamic && i != regular-1 {
			return invalid(fmt.Sprintf("segments.%d.size", i), "only the last regular segment may be \"dynamic\"")
		}
		ivs = append(ivs, interval{what: fmt.Sprintf("segment %d", i), offset: s.offset, size: s.size})
	}
	return overlaps(ivs)
}

func validSectorSize(n int) bool {
	return n == 512 || n == 1024 || n == 2048 || n == 4096
}

func (m *metadata) segmentHasDigest(id int) bool {
	for _, d := range m.digests {
		for _, s := range d.segments {
			if s == id {
				return true
			}
		}
	}
	return false
}

// validateReencryptSegments follows cryptsetup's
// validate_reencrypt_segments: during an online reencryption the backup
// segments record the old ("backup-previous") and the new
// ("backup-final") layout, and every regular segment must match one of
// them, the one "in-reencryption" the new.
func (m *metadata) validateReencryptSegments() error {
	if len(m.onlineReencryptRequirements()) == 0 {
		return nil
	}
	var final, previous *segment
	for _, id := range sortedKeys(m.segments) {
		switch s := m.segments[id]; {
		case !s.backup():
		case slices.Contains(s.flags, "backup-final"):
			final = s
		case slices.Contains(s.flags, "backup-previous"):
			previous = s
		}
	}
	if final == nil || previous == nil {
		return invalid("segments", "an online reencryption needs a backup-final and a backup-previous segment")
	}
	for _, id := range sortedKeys(m.segments) {
		s := m.segments[id]
		if s.backup() {
			continue
		}
		if slices.Contains(s.flags, "in-reencryption") {
			if !s.sameLayout(final) {
				return invalid(fmt.Sprintf("segments.%d", id), "in reencryption but unlike the backup-final segment")
			}
		} else if !s.sameLayout(final) && !s.sameLayout(previous) {
			return invalid(fmt.Sprintf("segments.%d", id), "like neither the backup-final nor the backup-previous segment")
		}
	}
	return nil
}

// sameLayout compares segments as cryptsetup's json_segment_cmp does:
// the type and, for crypt segments, the cipher and sector size.
func (s *segment) sameLayout(o *segment) bool {
	if s.typ != o.typ {
		return false
	}
	return s.typ != "crypt" || (s.encryption == o.encryption && s.sectorSize == o.sectorSize)
}

// onlineReencryptRequirements returns the requirements that cryptsetup
// reads as an online reencryption in progress.
func (m *metadata) onlineReencryptRequirements() []string {
	var known []string
	for _, r := range m.config.requirements {
		if r == "online-reencrypt" || r == "online-reencrypt-v2" || r == "online-reencrypt-v3" {
			known = append(known, r)
		}
	}
	return known
}

// reencryptFlag reports whether a requirement names online reencryption
// in any version ("online-reencrypt", "online-reencrypt-v<n>"), as
// cryptsetup's reencrypt_candidate_flag does.
func reencryptFlag(req string) bool {
	v, ok := strings.CutPrefix(req, "online-reencrypt")
	if !ok {
		return false
	}
	if v == "" {
		return true
	}
	v, ok = strings.CutPrefix(v, "-v")
	if !ok || v == "" {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (m *metadata) validateKeyslots() error {
	// An online reencryption is one reencrypt keyslot and one
	// online-reencrypt requirement; the versions cryptsetup knows need
	// the keyslot.
	var flags []string
	for _, r := range m.config.requirements {
		if reencryptFlag(r) {
			flags = append(flags, r)
		}
	}
	known := m.onlineReencryptRequirements()
	if len(flags) > 1 {
		return invalid("config.requirements.mandatory", "more than one online reencryption requirement (%s)", strings.Join(flags, ", "))
	}
	reencrypt := -1
	for _, id := range sortedKeys(m.keyslots) {
		if m.keyslots[id].typ != "reencrypt" {
			continue
		}
		if reencrypt >= 0 {
			return invalid(fmt.Sprintf("keyslots.%d", id), "a second reencrypt keyslot (keyslot %d is one)", reencrypt)
		}
		reencrypt = id
	}
	if reencrypt >= 0 && len(flags) == 0 {
		return invalid(fmt.Sprintf("keyslots.%d", reencrypt), "reencrypt keyslot without an online-reencrypt requirement")
	}
	if reencrypt < 0 && len(known) > 0 {
		return invalid("config.requirements.mandatory", "%s without a reencrypt keyslot", known[0])
	}
	for _, id := range sortedKeys(m.keyslots) {
		ks := m.keyslots[id]
		if ks.typ != "luks2" {
			continue
		}
		n := 0
		for _, d := range m.digests {
			for _, k := range d.keyslots {
				if k == id {
					n++
				}
			}
		}
		if n != 1 {
			return invalid(fmt.Sprintf("keyslots.%d", id), "assigned to %d digests, want exactly 1", n)
		}
	}
	return nil
}

func (m *metadata) validateAreas(hdrSize uint64) error {
	start := 2 * hdrSize
	end := start + m.config.keyslotsSize
	var ivs []interval
	for _, id := range sortedKeys(m.keyslots) {
		ks := m.keyslots[id]
		path := fmt.Sprintf("keyslots.%d.area", id)
		a := ks.area
		if a.offset < start {
			return invalid(path+".offset", "%d lies inside the metadata (which ends at %d)", a.offset, start)
		}
		if a.size == 0 {
			return invalid(path+".size", "must not be zero")
		}
		if a.offset > math.MaxUint64-a.size {
			return invalid(path, "offset %d + size %d overflows 64 bits", a.offset, a.size)
		}
		if a.offset+a.size > end {
			return invalid(path, "[%d, %d) overflows the keyslots area, which ends at %d", a.offset, a.offset+a.size, end)
		}
		if ks.typ == "luks2" {
			// The key material is read and written in 512-byte sectors
			// from the area's start and must stay inside the area.
			if a.offset%sectorSize != 0 {
				return invalid(path+".offset", "%d is not aligned to %d bytes", a.offset, sectorSize)
			}
			if need := afSectors(ks.keySize, ks.af.stripes) * sectorSize; a.size < need {
				return invalid(path+".size", "%d is smaller than the %d bytes of split key material", a.size, need)
			}
		}
		ivs = append(ivs, interval{what: fmt.Sprintf("keyslot %d area", id), offset: a.offset, size: a.size})
	}
	return overlaps(ivs)
}

// overlaps fails if any two intervals share a byte; size 0 means "to the
// end".
func overlaps(ivs []interval) error {
	sorted := append([]interval(nil), ivs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].offset < sorted[j].offset })
	for i := 1; i < len(sorted); i++ {
		prev, cur := sorted[i-1], sorted[i]
		if prev.size == 0 || cur.offset < prev.end() {
			return fmt.Errorf("%w: %s [%d, %s) overlaps %s at %d", ErrInvalidHeader,
				prev.what, prev.offset, endString(prev), cur.what, cur.offset)
		}
	}
	return nil
}

func endString(iv interval) string {
	if iv.size == 0 {
		return "end of device"
	}
	return fmt.Sprint(iv.end())
}

// afSectors is the number of 512-byte sectors holding keySize bytes split
// into stripes.
func afSectors(keySize, stripes int) uint64 {
	n := uint64(keySize) * uint64(stripes)
	return (n + sectorSize - 1) / sectorSize
}
