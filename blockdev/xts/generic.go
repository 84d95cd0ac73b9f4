package xts

import "encoding/binary"

// cryptGeneric is XTS with crypto/aes one block at a time, for machines
// without AES-NI. The tweak lives in two uint64s so advancing it is a few
// shifts instead of a byte loop.
func (c *Cipher) cryptGeneric(dst, src []byte, sector uint64, decrypt bool) {
	var t [BlockSize]byte
	binary.LittleEndian.PutUint64(t[:8], sector)
	c.b2.Encrypt(t[:], t[:])
	lo := binary.LittleEndian.Uint64(t[:8])
	hi := binary.LittleEndian.Uint64(t[8:])

	var x [BlockSize]byte
	for i := 0; i < len(src); i += BlockSize {
		binary.LittleEndian.PutUint64(x[:8], binary.LittleEndian.Uint64(src[i:])^lo)
		binary.LittleEndian.PutUint64(x[8:], binary.LittleEndian.Uint64(src[i+8:])^hi)
		if decrypt {
			c.b1.Decrypt(x[:], x[:])
		} else {
			c.b1.Encrypt(x[:], x[:])
		}
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(x[:8])^lo)
		binary.LittleEndian.PutUint64(dst[i+8:], binary.LittleEndian.Uint64(x[8:])^hi)
		lo, hi = mulAlpha(lo, hi)
	}
	clear(t[:])
	clear(x[:])
}

// mulAlpha multiplies the tweak (lo, hi), a little-endian 128-bit value,
// by alpha = x in GF(2^128) modulo x^128 + x^7 + x^2 + x + 1 (P1619 5.2).
// The reduction is applied through a mask, not a branch, so timing does
// not depend on the tweak.
func mulAlpha(lo, hi uint64) (uint64, uint64) {
	carry := hi >> 63
	hi = hi<<1 | lo>>63
	lo = lo<<1 ^ 0x87&-carry
	return lo, hi
}
