// Package sha256block is the SHA-256 compression function on its own,
// for the two places where LUKS2 hashes many tiny messages of a fixed
// shape: the anti-forensic diffusion (4000 stripes of one or two blocks
// each per keyslot) and PBKDF2-HMAC-SHA256 (two blocks per iteration).
// Through crypto/sha256 each of those blocks costs its compression plus
// several times as much in buffering, padding and copying of the digest
// state; here a caller that lays out the padded block itself pays only
// the compression, on amd64 with the SHA extensions when the CPU has them
// (the routine is Go's own), else in portable Go.
//
// The package does no padding and keeps no buffer: callers that hash
// messages of any other shape use crypto/sha256.
package sha256block

// Size is the size of a SHA-256 digest in bytes; BlockSize the size of
// the blocks the compression function takes.
const (
	Size      = 32
	BlockSize = 64
)

// State is a SHA-256 chaining value.
type State [8]uint32

// IV is the initial chaining value.
var IV = State{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// Blocks runs the compression function over each whole 64-byte block of
// p, in order, updating s; a trailing partial block is ignored.
func Blocks(s *State, p []byte) {
	if haveSHANI {
		blocksSHANI(s, p)
		return
	}
	blocksGeneric(s, p)
}

// Blocks2 is Blocks on two independent chains at once, a over pa and b
// over pb, which must be of the same length. The compression's rounds
// each wait on the one before, so the SHA extensions leave most of the
// CPU's capacity unused on one chain; two interleaved take little more
// time than one. LUKS2 has two chains where a key is 64 bytes: the two
// halves of each anti-forensic stripe and the two output blocks of the
// keyslot's PBKDF2.
func Blocks2(a, b *State, pa, pb []byte) {
	if len(pa) != len(pb) {
		panic("sha256block: Blocks2 on messages of different lengths")
	}
	if haveSHANI {
		blocks2SHANI(a, b, pa, pb)
		return
	}
	blocksGeneric(a, pa)
	blocksGeneric(b, pb)
}

// Put writes s big-endian into dst (at least Size bytes): the digest,
// when s is the state after the last, padded block.
func (s *State) Put(dst []byte) {
	_ = dst[Size-1]
	for i, v := range s {
		dst[4*i] = byte(v >> 24)
		dst[4*i+1] = byte(v >> 16)
		dst[4*i+2] = byte(v >> 8)
		dst[4*i+3] = byte(v)
	}
}

// Pad completes a final block: buf holds n message bytes at its start
// (n <= 55 for a single block, 55 < n < 120 for two); Pad appends the 1
// bit, zeros and the bit length of a message of total bytes (which counts
// the blocks hashed before buf too) and returns the padded blocks, a
// prefix of buf, which must hold 128 bytes when n > 55.
func Pad(buf []byte, n int, total uint64) []byte {
	end := BlockSize
	if n > BlockSize-9 {
		end = 2 * BlockSize
	}
	b := buf[:end]
	b[n] = 0x80
	clear(b[n+1 : end-8])
	bits := total * 8
	for i := range 8 {
		b[end-1-i] = byte(bits >> (8 * i))
	}
	return b
}
