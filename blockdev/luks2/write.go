package luks2

import (
	"crypto/rand"
	"fmt"
	"io"
)

// WriterAtSyncer is a device or image file the header is written to.
// Sync must make the writes durable (fsync); *os.File qualifies.
type WriterAtSyncer interface {
	io.WriterAt
	Sync() error
}

// Write commits the header: the sequence id goes up by one and both
// metadata copies are written, the secondary first, each followed by Sync,
// so that a crash at any point leaves one valid copy (the old one or the
// new one) for Read to pick. If dev can also be read, Write first checks
// that the primary header on it is still the revision this Header was read
// from, and fails with ErrConcurrentUpdate otherwise.
func (h *Header) Write(dev WriterAtSyncer) error {
	if err := h.checkWritable(); err != nil {
		return err
	}
	if r, ok := dev.(io.ReaderAt); ok && h.primarySeqKnown {
		if err := h.checkSeqID(r); err != nil {
			return err
		}
	}
	text := h.meta.root.marshal()
	jsonSize := h.hdrSize - binHeaderSize
	if uint64(len(text)) >= jsonSize {
		return fmt.Errorf("%w: JSON metadata is %d bytes, the JSON area holds %d", ErrNoSpace, len(text), jsonSize-1)
	}
	if h.newSalt1 || h.newSalt2 {
		salt1, salt2 := h.salt1, h.salt2
		if err := freshSalt(h.newSalt1, &salt1); err != nil {
			return err
		}
		if err := freshSalt(h.newSalt2, &salt2); err != nil {
			return err
		}
		h.salt1, h.salt2 = salt1, salt2
		h.newSalt1, h.newSalt2 = false, false
	}
	seqid := h.seqid + 1
	for _, secondary := range []bool{true, false} {
		img, offset := h.encodeCopy(text, seqid, secondary)
		name := "primary"
		if secondary {
			name = "secondary"
		}
		if _, err := dev.WriteAt(img, int64(offset)); err != nil {
			return fmt.Errorf("luks2: write %s header: %w", name, err)
		}
		if err := dev.Sync(); err != nil {
			return fmt.Errorf("luks2: sync %s header: %w", name, err)
		}
	}
	h.seqid = seqid
	h.primarySeq, h.primarySeqKnown = seqid, true
	h.warnings = nil
	return nil
}

func freshSalt(need bool, salt *[saltLen]byte) error {
	if !need {
		return nil
	}
	if _, err := rand.Read(salt[:]); err != nil {
		return fmt.Errorf("luks2: header salt: %w", err)
	}
	return nil
}

// encodeCopy lays out one metadata copy: binary header, JSON text, zero
// padding to hdr_size, with the checksum filled in.
func (h *Header) encodeCopy(text []byte, seqid uint64, secondary bool) ([]byte, uint64) {
	bh := binHeader{
		version: 2, hdrSize: h.hdrSize, seqid: seqid, label: h.label, csumAlg: h.csumAlg,
		salt: h.salt1, uuid: h.uuid, subsystem: h.subsystem,
	}
	if secondary {
		bh.salt, bh.hdrOffset = h.salt2, h.hdrSize
	}
	img := make([]byte, h.hdrSize)
	copy(img, bh.encode(secondary))
	copy(img[binHeaderSize:], text)
	newHash, err := checksumHash(h.csumAlg)
	if err != nil {
		// Read and Format only let known algorithms through.
		newHash, _ = checksumHash("sha256")
	}
	copy(img[offCsum:offCsum+csumLen], checksum(newHash, img[:binHeaderSize], img[binHeaderSize:]))
	return img, bh.hdrOffset
}

// primarySeqID returns the sequence id in the binary header at offset 0,
// if there is a LUKS2 primary header of this volume there, damaged or not.
func (h *Header) primarySeqID(r io.ReaderAt) (uint64, bool) {
	var b [binHeaderSize]byte
	if _, err := r.ReadAt(b[:], 0); err != nil {
		return 0, false
	}
	if string(b[:len(magicPrimary)]) != magicPrimary {
		return 0, false
	}
	bh := decodeBin(b[:])
	if bh.version != 2 || bh.uuid != h.uuid {
		return 0, false
	}
	return bh.seqid, true
}

// checkSeqID fails if the primary header on the device changed since it
// was read (or last written by us): someone else updated the volume.
func (h *Header) checkSeqID(r io.ReaderAt) error {
	seq, ok := h.primarySeqID(r)
	if !ok || seq == h.primarySeq {
		return nil
	}
	return fmt.Errorf("%w: primary seqid on disk is %d, was %d", ErrConcurrentUpdate, seq, h.primarySeq)
}
