package luks2

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash"
)

// stripes is the number of anti-forensic stripes cryptsetup uses.
const stripes = 4000

// The LUKS anti-forensic splitter: a key of n bytes becomes stripes*n
// bytes, all of which are needed to get it back, so destroying any part of
// a keyslot area destroys the key. Each stripe but the last is random; a
// running block is XORed with each stripe and diffused by the hash; the
// last stripe is the key XOR the running block.

// afSplit writes the split of key into dst (len(key)*stripes bytes).
func afSplit(dst, key []byte, stripes int, h func() hash.Hash) error {
	n := len(key)
	if len(dst) < n*stripes {
		return fmt.Errorf("luks2: af: buffer of %d bytes for %d stripes of %d", len(dst), stripes, n)
	}
	block := make([]byte, n)
	defer clear(block)
	for i := 0; i < stripes-1; i++ {
		s := dst[i*n : (i+1)*n]
		if _, err := rand.Read(s); err != nil {
			return fmt.Errorf("luks2: af: %w", err)
		}
		xor(block, s)
		diffuse(block, h)
	}
	last := dst[(stripes-1)*n : stripes*n]
	copy(last, block)
	xor(last, key)
	return nil
}

// afMerge recovers the key (len(dst) bytes) from its split in src.
func afMerge(dst, src []byte, stripes int, h func() hash.Hash) error {
	n := len(dst)
	if len(src) < n*stripes {
		return fmt.Errorf("luks2: af: %d bytes hold no %d stripes of %d", len(src), stripes, n)
	}
	clear(dst)
	for i := 0; i < stripes-1; i++ {
		xor(dst, src[i*n:(i+1)*n])
		diffuse(dst, h)
	}
	xor(dst, src[(stripes-1)*n:stripes*n])
	return nil
}

func xor(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

// diffuse replaces each digest-sized chunk of b (the last one possibly
// short) with the hash of its big-endian index followed by the chunk,
// truncated to the chunk's length.
func diffuse(b []byte, newHash func() hash.Hash) {
	hh := newHash()
	size := hh.Size()
	var idx [4]byte
	sum := make([]byte, 0, size)
	for i := 0; i*size < len(b); i++ {
		chunk := b[i*size : min((i+1)*size, len(b))]
		hh.Reset()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		hh.Write(idx[:])
		hh.Write(chunk)
		sum = hh.Sum(sum[:0])
		copy(chunk, sum)
	}
	clear(sum)
}
