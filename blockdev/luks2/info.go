package luks2

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Header is a LUKS2 header in memory: the binary fields of the copy it
// was read from and the JSON metadata. Methods that change it validate
// the result before taking it, so a Header is always valid. It is not
// safe for concurrent use.
type Header struct {
	hdrSize   uint64
	seqid     uint64
	label     string
	subsystem string
	uuid      string
	csumAlg   string
	salt1     [saltLen]byte // primary copy
	salt2     [saltLen]byte // secondary copy
	// A copy that was damaged on read gets a fresh salt when rewritten,
	// as cryptsetup's recovery does.
	newSalt1, newSalt2 bool
	// primarySeq is the seqid of the primary binary header on the device
	// as last seen, so Write can tell whether someone else changed it.
	primarySeq      uint64
	primarySeqKnown bool
	meta            *metadata
	warnings        []string
}

func (h *Header) warn(format string, args ...any) {
	h.warnings = append(h.warnings, fmt.Sprintf(format, args...))
}

func (h *Header) load(c *headerCopy, salt1, salt2 [saltLen]byte) {
	h.hdrSize = c.bin.hdrSize
	h.seqid = c.bin.seqid
	h.label = c.bin.label
	h.subsystem = c.bin.subsystem
	h.uuid = c.bin.uuid
	h.csumAlg = c.bin.csumAlg
	h.salt1, h.salt2 = salt1, salt2
	h.meta = c.meta
}

// replace validates a changed JSON tree and makes it the header's.
func (h *Header) replace(root *object) error {
	m, err := parseRoot(root)
	if err == nil {
		err = m.validate(h.hdrSize)
	}
	if err != nil {
		return err
	}
	h.meta = m
	return nil
}

// Warnings lists what Read noticed but could recover from, such as a
// damaged copy; a caller should show them. Write clears them.
func (h *Header) Warnings() []string { return slices.Clone(h.warnings) }

// UUID is the header's UUID as stored (normally the canonical
// 8-4-4-4-12 form).
func (h *Header) UUID() string { return h.uuid }

// Label is the header's label, empty when unset.
func (h *Header) Label() string { return h.label }

// Subsystem is the header's subsystem label, empty when unset.
func (h *Header) Subsystem() string { return h.subsystem }

// SetLabel changes the label and subsystem (each at most 47 bytes); Write
// commits them.
func (h *Header) SetLabel(label, subsystem string) error {
	if len(label) >= labelLen || len(subsystem) >= labelLen {
		return fmt.Errorf("luks2: label and subsystem are limited to %d bytes", labelLen-1)
	}
	h.label, h.subsystem = label, subsystem
	return nil
}

// SeqID is the sequence id of the header as read or last written.
func (h *Header) SeqID() uint64 { return h.seqid }

// MetadataSize is the size of one metadata copy (binary header plus JSON
// area): 16 KiB to 4 MiB.
func (h *Header) MetadataSize() uint64 { return h.hdrSize }

// KeyslotsSize is the size of the binary keyslot area, which starts right
// after the two metadata copies.
func (h *Header) KeyslotsSize() uint64 { return h.meta.config.keyslotsSize }

// Flags are the persistent activation flags in config.flags.
func (h *Header) Flags() []string { return slices.Clone(h.meta.config.flags) }

// Requirements are the mandatory requirements in config.requirements
// (for example "online-reencrypt"). While there are any, this package
// refuses to change the header.
func (h *Header) Requirements() []string { return slices.Clone(h.meta.config.requirements) }

// JSON returns the metadata as it would be written.
func (h *Header) JSON() json.RawMessage { return h.meta.root.marshal() }

// SegmentInfo describes the data segment.
type SegmentInfo struct {
	Offset     uint64 // bytes from the start of the device
	Size       uint64 // bytes; 0 with Dynamic
	Dynamic    bool   // the segment runs to the end of the device
	IVTweak    uint64 // added to the sector number for IVs
	Encryption string // dm-crypt cipher spec, e.g. "aes-xts-plain64"
	SectorSize int    // encryption sector size in bytes
	Integrity  string // dm-integrity algorithm, empty for none
	KeySize    int    // volume key size in bytes, 0 while there is no keyslot
	// MetadataEnd is where the two metadata copies and the keyslot area
	// end; on the device that holds the header the data starts there or
	// later.
	MetadataEnd uint64
}

// MetadataEnd is the size of the header on the device: both metadata
// copies and the keyslot area.
func (h *Header) MetadataEnd() uint64 { return 2*h.hdrSize + h.meta.config.keyslotsSize }

// CheckAttached fails with ErrHeaderOverlap when a data segment starts
// inside the metadata or keyslot area. The validator lets that pass for a
// detached header (cryptsetup --header; data offset 0), whose data lives
// on another device; on the device that holds the header, the data would
// overwrite it, and cryptsetup refuses to activate it. A header in the
// middle of a reencryption is left to the reencryption's own rules (its
// segments may be in flight); it is never opened anyway.
func (h *Header) CheckAttached() error {
	if h.reencrypting() != nil {
		return nil
	}
	end := h.MetadataEnd()
	for _, id := range sortedKeys(h.meta.segments) {
		if s := h.meta.segments[id]; s.offset < end {
			return fmt.Errorf("%w: segment %d starts at offset %d, inside the metadata and keyslot area that ends at %d",
				ErrHeaderOverlap, id, s.offset, end)
		}
	}
	return nil
}

// Segment returns the data segment of a header that sits on its data
// device. A header in the middle of a reencryption (a reencrypt keyslot,
// several segments) is refused with ErrUnsupported, a segment that
// overlaps the header with ErrHeaderOverlap (see CheckAttached).
func (h *Header) Segment() (SegmentInfo, error) {
	m := h.meta
	if err := h.reencrypting(); err != nil {
		return SegmentInfo{}, err
	}
	if err := h.CheckAttached(); err != nil {
		return SegmentInfo{}, err
	}
	if len(m.segments) != 1 {
		return SegmentInfo{}, fmt.Errorf("%w: header has %d segments (reencryption in progress?)", ErrUnsupported, len(m.segments))
	}
	s := m.segments[0]
	if s.typ != "crypt" {
		return SegmentInfo{}, fmt.Errorf("%w: segment type %q", ErrUnsupported, s.typ)
	}
	info := SegmentInfo{
		Offset: s.offset, Size: s.size, Dynamic: s.dynamic, IVTweak: s.ivTweak,
		Encryption: s.encryption, SectorSize: s.sectorSize, Integrity: s.integrity,
		MetadataEnd: h.MetadataEnd(),
	}
	// The volume key size is only recorded in the keyslots.
	if d, err := m.segmentDigest(dataSegment); err == nil {
		for _, k := range d.keyslots {
			if ks := m.keyslots[k]; ks.typ == "luks2" {
				info.KeySize = ks.keySize
				break
			}
		}
	}
	return info, nil
}

// KeyslotInfo describes one keyslot.
type KeyslotInfo struct {
	ID       int
	Type     string // "luks2"; other types are listed but cannot be opened
	KeySize  int    // volume key bytes
	Priority int    // 0 ignore, 1 normal, 2 prefer
	Digest   int    // digest the keyslot is assigned to, -1 if none
	KDF      KDF
	// The binary area holding the split, encrypted volume key.
	AreaOffset     uint64
	AreaSize       uint64
	AreaEncryption string
	AreaKeySize    int
	AFStripes      int
	AFHash         string

	// Bound is set when the keyslot's digest is assigned to the data
	// segment. An unbound keyslot (cryptsetup luksAddKey --unbound)
	// holds a key that is not the volume key and does not open the
	// volume.
	Bound bool
}

// Keyslots lists the keyslots in id order.
func (h *Header) Keyslots() []KeyslotInfo {
	m := h.meta
	var out []KeyslotInfo
	for _, id := range sortedKeys(m.keyslots) {
		ks := m.keyslots[id]
		ki := KeyslotInfo{
			ID: id, Type: ks.typ, KeySize: ks.keySize, Priority: ks.priority, Digest: -1, KDF: ks.kdf,
			AreaOffset: ks.area.offset, AreaSize: ks.area.size, AreaEncryption: ks.area.encryption,
			AreaKeySize: ks.area.keySize, AFStripes: ks.af.stripes, AFHash: ks.af.hash,
		}
		if d, ok := m.digestOf(id); ok {
			ki.Digest = d.id
		}
		ki.Bound = m.bound(id)
		out = append(out, ki)
	}
	return out
}

func (h *Header) checkWritable() error {
	if r := h.meta.config.requirements; len(r) > 0 {
		return fmt.Errorf("%w: %v", ErrUnmetRequirements, r)
	}
	return nil
}
