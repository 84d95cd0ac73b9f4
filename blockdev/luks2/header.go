package luks2

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// Binary header layout (struct luks2_hdr_disk), big-endian integers.
const (
	offMagic     = 0   // [6]
	offVersion   = 6   // u16
	offHdrSize   = 8   // u64, binary header + JSON area
	offSeqID     = 16  // u64
	offLabel     = 24  // [48]
	offCsumAlg   = 72  // [32]
	offSalt      = 104 // [64]
	offUUID      = 168 // [40]
	offSubsystem = 208 // [48]
	offHdrOffset = 256 // u64
	offCsum      = 448 // [64]

	labelLen   = 48
	csumAlgLen = 32
	saltLen    = 64
	uuidLen    = 40
	csumLen    = 64
)

const (
	magicPrimary   = "LUKS\xba\xbe"
	magicSecondary = "SKUL\xba\xbe"
)

// binHeader is one decoded binary header.
type binHeader struct {
	version   uint16
	hdrSize   uint64
	seqid     uint64
	label     string
	csumAlg   string
	salt      [saltLen]byte
	uuid      string
	subsystem string
	hdrOffset uint64
	csum      [csumLen]byte
}

func decodeBin(b []byte) binHeader {
	var h binHeader
	h.version = binary.BigEndian.Uint16(b[offVersion:])
	h.hdrSize = binary.BigEndian.Uint64(b[offHdrSize:])
	h.seqid = binary.BigEndian.Uint64(b[offSeqID:])
	h.label = cstring(b[offLabel : offLabel+labelLen])
	h.csumAlg = cstring(b[offCsumAlg : offCsumAlg+csumAlgLen])
	copy(h.salt[:], b[offSalt:])
	h.uuid = cstring(b[offUUID : offUUID+uuidLen])
	h.subsystem = cstring(b[offSubsystem : offSubsystem+labelLen])
	h.hdrOffset = binary.BigEndian.Uint64(b[offHdrOffset:])
	copy(h.csum[:], b[offCsum:])
	return h
}

// encode lays the header out in 4096 bytes with a zero checksum field.
// Text fields are cut to leave room for their terminating NUL.
func (h *binHeader) encode(secondary bool) []byte {
	b := make([]byte, binHeaderSize)
	if secondary {
		copy(b[offMagic:], magicSecondary)
	} else {
		copy(b[offMagic:], magicPrimary)
	}
	binary.BigEndian.PutUint16(b[offVersion:], h.version)
	binary.BigEndian.PutUint64(b[offHdrSize:], h.hdrSize)
	binary.BigEndian.PutUint64(b[offSeqID:], h.seqid)
	putCString(b[offLabel:offLabel+labelLen], h.label)
	putCString(b[offCsumAlg:offCsumAlg+csumAlgLen], h.csumAlg)
	copy(b[offSalt:offSalt+saltLen], h.salt[:])
	putCString(b[offUUID:offUUID+uuidLen], h.uuid)
	putCString(b[offSubsystem:offSubsystem+labelLen], h.subsystem)
	binary.BigEndian.PutUint64(b[offHdrOffset:], h.hdrOffset)
	return b
}

// cstring reads a NUL-terminated text field. The field's last byte is
// always taken as the terminator, as cryptsetup does, so a field without
// a NUL reads the same as it will be written back.
func cstring(b []byte) string {
	b = b[:len(b)-1]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func putCString(dst []byte, s string) {
	copy(dst[:len(dst)-1], s)
}

// checksumHash returns the hash a header names for its checksum.
func checksumHash(alg string) (func() hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("checksum algorithm %q is not supported", alg)
}

// checksum is the hash of the binary header, with its checksum field
// zeroed, followed by the whole JSON area.
func checksum(newHash func() hash.Hash, bin, jsonArea []byte) []byte {
	h := newHash()
	var zeroed [binHeaderSize]byte
	copy(zeroed[:], bin)
	clear(zeroed[offCsum : offCsum+csumLen])
	h.Write(zeroed[:])
	h.Write(jsonArea)
	return h.Sum(nil)
}

// headerCopy is one metadata copy read from the device.
type headerCopy struct {
	bin  binHeader
	meta *metadata
	text []byte // the JSON text meta was parsed from
}

// copyError says why one copy is unusable. found is set when the LUKS2
// magic was there; sane when the binary header also passed its checks and
// checksum, so its hdr_size can be trusted to locate the other copy.
type copyError struct {
	err     error
	found   bool
	sane    bool
	hdrSize uint64
}

// readCopy reads and checks the metadata copy at offset: magic, version,
// hdr_offset, hdr_size, checksum, then the JSON area and its validation.
// When same, a copy read before, holds the very JSON text and hdr_size,
// its parsed metadata is taken instead of parsing and validating the text
// again: the two copies of a healthy header are identical but for the
// binary header, and parsing is much of the CPU of an unlock.
func readCopy(r io.ReaderAt, offset uint64, secondary bool, same *headerCopy) (*headerCopy, *copyError) {
	name := "primary"
	magic := magicPrimary
	if secondary {
		name, magic = "secondary", magicSecondary
	}
	var bh binHeader
	fail := func(sane bool, format string, args ...any) *copyError {
		return &copyError{
			err:   fmt.Errorf("%s header at offset %d: %s", name, offset, fmt.Sprintf(format, args...)),
			found: true, sane: sane, hdrSize: bh.hdrSize,
		}
	}
	bin := make([]byte, binHeaderSize)
	if _, err := r.ReadAt(bin, int64(offset)); err != nil {
		return nil, &copyError{err: fmt.Errorf("%s header at offset %d: %w", name, offset, err)}
	}
	if string(bin[:len(magic)]) != magic {
		return nil, &copyError{err: fmt.Errorf("%w: %s header at offset %d: no LUKS2 magic", ErrNotLUKS2, name, offset)}
	}
	bh = decodeBin(bin)
	if bh.version != 2 {
		return nil, &copyError{err: fmt.Errorf("%w: %s header at offset %d: version %d", ErrNotLUKS2, name, offset, bh.version)}
	}
	if bh.hdrOffset != offset {
		return nil, fail(false, "hdr_offset %d does not match its position", bh.hdrOffset)
	}
	if !validMetadataSize(bh.hdrSize) {
		return nil, fail(false, "hdr_size %d is not an allowed metadata size", bh.hdrSize)
	}
	if secondary && offset != bh.hdrSize {
		return nil, fail(false, "hdr_size %d does not match its offset", bh.hdrSize)
	}
	newHash, err := checksumHash(bh.csumAlg)
	if err != nil {
		return nil, fail(false, "%v", err)
	}
	jsonArea := make([]byte, bh.hdrSize-binHeaderSize)
	if _, err := r.ReadAt(jsonArea, int64(offset+binHeaderSize)); err != nil {
		return nil, &copyError{err: fmt.Errorf("%s header at offset %d: JSON area: %w", name, offset, err), found: true}
	}
	sum := checksum(newHash, bin, jsonArea)
	if !bytes.Equal(sum, bh.csum[:len(sum)]) {
		return nil, fail(false, "checksum mismatch")
	}
	text, err := jsonText(jsonArea)
	if err != nil {
		return nil, fail(true, "%v", err)
	}
	if same != nil && same.bin.hdrSize == bh.hdrSize && bytes.Equal(same.text, text) {
		return &headerCopy{bin: bh, meta: same.meta, text: text}, nil
	}
	m, err := parseMetadata(text)
	if err == nil {
		err = m.validate(bh.hdrSize)
	}
	if err != nil {
		return nil, fail(true, "%v", err)
	}
	return &headerCopy{bin: bh, meta: m, text: text}, nil
}

// jsonText cuts the JSON text out of a JSON area: it must start at the
// first byte with '{' and be followed only by NUL bytes, at least one.
func jsonText(area []byte) ([]byte, error) {
	if len(area) == 0 || area[0] != '{' {
		return nil, fmt.Errorf("%w: JSON area does not start with '{'", ErrInvalidHeader)
	}
	end := bytes.IndexByte(area, 0)
	if end < 0 {
		return nil, fmt.Errorf("%w: JSON area has no terminating NUL", ErrInvalidHeader)
	}
	for i := end; i < len(area); i++ {
		if area[i] != 0 {
			return nil, fmt.Errorf("%w: byte 0x%02x after the JSON text at offset %d", ErrInvalidHeader, area[i], i)
		}
	}
	return area[:end], nil
}

// Read reads a LUKS2 header. Of the two metadata copies it takes the
// valid one with the higher sequence id; when the primary is damaged the
// secondary is used (looked for at every allowed offset if the primary
// does not say where it is), and Warnings says so. It fails only when
// neither copy is valid.
func Read(r io.ReaderAt) (*Header, error) {
	primary, perr := readCopy(r, 0, false, nil)
	var secondary *headerCopy
	var serr *copyError
	switch {
	case perr == nil:
		secondary, serr = readCopy(r, primary.bin.hdrSize, true, primary)
	case perr.sane:
		// The binary header is intact, only its JSON is bad: its hdr_size
		// locates the secondary copy.
		secondary, serr = readCopy(r, perr.hdrSize, true, nil)
	default:
		// Nothing says where the secondary is: try every allowed offset,
		// and report the most telling failure if none works.
		for _, off := range metadataSizes {
			s, e := readCopy(r, off, true, nil)
			if s != nil {
				secondary, serr = s, nil
				break
			}
			if serr == nil || (e.found && !serr.found) {
				serr = e
			}
		}
	}

	h := &Header{}
	switch {
	case primary != nil && secondary != nil:
		use := primary
		if secondary.bin.seqid > primary.bin.seqid {
			use = secondary
			h.warn("primary header is older (seqid %d) than the secondary (seqid %d), an update was interrupted; using the secondary",
				primary.bin.seqid, secondary.bin.seqid)
		} else if secondary.bin.seqid < primary.bin.seqid {
			h.warn("secondary header is older (seqid %d) than the primary (seqid %d), an update was interrupted; using the primary",
				secondary.bin.seqid, primary.bin.seqid)
		}
		h.load(use, primary.bin.salt, secondary.bin.salt)
	case primary != nil:
		h.warn("secondary header is damaged (%v); using the primary, the next write repairs it", serr.err)
		h.load(primary, primary.bin.salt, [saltLen]byte{})
		h.newSalt2 = true
	case secondary != nil:
		h.warn("primary header is damaged (%v); using the secondary header at offset %d, the next write repairs it",
			perr.err, secondary.bin.hdrOffset)
		h.load(secondary, [saltLen]byte{}, secondary.bin.salt)
		h.newSalt1 = true
	default:
		if serr == nil {
			serr = &copyError{err: errors.New("secondary header not found")}
		}
		if errors.Is(perr.err, ErrNotLUKS2) && errors.Is(serr.err, ErrNotLUKS2) {
			return nil, fmt.Errorf("%w (primary: %v)", ErrNotLUKS2, perr.err)
		}
		return nil, fmt.Errorf("%w: no valid header copy: %v; %v", ErrInvalidHeader, unwrapSentinel(perr.err), unwrapSentinel(serr.err))
	}
	h.primarySeq, h.primarySeqKnown = h.primarySeqID(r)
	return h, nil
}

// unwrapSentinel drops the "luks2: invalid header: " of a copy's reason,
// which the combined error already starts with.
func unwrapSentinel(err error) string {
	return strings.ReplaceAll(err.Error(), ErrInvalidHeader.Error()+": ", "")
}
