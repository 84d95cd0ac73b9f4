package contentenc

import (
	"errors"
	"fmt"
)

const (
	// DefaultBS is the plaintext block size.
	DefaultBS = 4096
	// IVLen is the per-block GCM nonce length (feature flag GCMIV128).
	IVLen = 16
	// TagLen is the per-block GCM tag length.
	TagLen = 16
	// Overhead is what sealing adds to each block.
	Overhead = IVLen + TagLen
	// CipherBS is the size of a full cipher block.
	CipherBS = DefaultBS + Overhead
)

// ErrSize reports a cipher file size no valid file can have.
var ErrSize = errors.New("contentenc: invalid cipher file size")

// CipherSize returns the cipher file size for a plaintext size. An empty
// file stays empty; anything else gets a header and one sealed block per
// started 4096 bytes. Sizes are meaningful up to the int64 range of off_t.
func CipherSize(plain uint64) uint64 {
	if plain == 0 {
		return 0
	}
	full, rest := plain/DefaultBS, plain%DefaultBS
	size := HeaderLen + full*CipherBS
	if rest > 0 {
		size += rest + Overhead
	}
	return size
}

// PlainSize returns the plaintext size of a cipher file of the given size.
//
// A file holding only a header is size 0: gocryptfs writes the header
// before the first block, so this is what an interrupted first write
// leaves. A file shorter than a header, or one whose last block is too
// short to hold any data after nonce and tag, cannot have been written by
// a correct implementation and is an error.
func PlainSize(cipher uint64) (uint64, error) {
	switch {
	case cipher == 0 || cipher == HeaderLen:
		return 0, nil
	case cipher < HeaderLen:
		return 0, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrSize, cipher, HeaderLen)
	}
	body := cipher - HeaderLen
	full, rest := body/CipherBS, body%CipherBS
	if rest == 0 {
		return full * DefaultBS, nil
	}
	if rest <= Overhead {
		return 0, fmt.Errorf("%w: %d bytes leaves a %d-byte last block, need more than %d",
			ErrSize, cipher, rest, Overhead)
	}
	return full*DefaultBS + rest - Overhead, nil
}

// BlockNo returns the number of the block that holds plaintext offset
// plainOff.
func BlockNo(plainOff uint64) uint64 { return plainOff / DefaultBS }

// PlainOff returns the plaintext offset at which block blockNo starts.
func PlainOff(blockNo uint64) uint64 { return blockNo * DefaultBS }

// CipherOff returns the offset of block blockNo in the cipher file,
// counting the header.
func CipherOff(blockNo uint64) uint64 { return HeaderLen + blockNo*CipherBS }

// IntraBlock is the part of one block that a plaintext range covers.
type IntraBlock struct {
	BlockNo uint64
	// Skip is the offset of the range inside the block.
	Skip uint64
	// Length is how many bytes of the block the range covers.
	Length uint64
}

// IsPartial reports whether the range covers less than the whole block, in
// which case a write has to read, decrypt and merge the old block first.
func (b IntraBlock) IsPartial() bool { return b.Skip != 0 || b.Length != DefaultBS }

// PlainOff is the plaintext offset where the covered part starts.
func (b IntraBlock) PlainOff() uint64 { return PlainOff(b.BlockNo) + b.Skip }

// CipherOff is the cipher file offset of the whole block.
func (b IntraBlock) CipherOff() uint64 { return CipherOff(b.BlockNo) }

// ExplodeRange splits the plaintext range [offset, offset+length) into
// per-block pieces, in order. A zero length yields nil. A range that would
// run past the end of the uint64 space is cut there.
func ExplodeRange(offset, length uint64) []IntraBlock {
	if length == 0 {
		return nil
	}
	if offset+length < offset {
		length = -offset // 2^64 - offset
	}
	first, last := BlockNo(offset), BlockNo(offset+length-1)
	out := make([]IntraBlock, 0, last-first+1)
	for length > 0 {
		b := IntraBlock{BlockNo: BlockNo(offset), Skip: offset % DefaultBS}
		b.Length = min(length, DefaultBS-b.Skip)
		out = append(out, b)
		offset += b.Length
		length -= b.Length
	}
	return out
}
