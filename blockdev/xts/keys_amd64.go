//go:build amd64 && !purego

package xts

import (
	"encoding/binary"
	"math/bits"
)

// expandKey writes the nr+1 encryption round keys of the AES key (16 or 32
// bytes) to enc, following FIPS 197 section 5.2. The assembly needs the
// schedule as plain bytes; crypto/aes keeps its own private.
func expandKey(enc []byte, key []byte) {
	nk := len(key) / 4
	nr := nk + 6
	copy(enc, key)
	rcon := uint32(1)
	for i := nk; i < 4*(nr+1); i++ {
		t := binary.BigEndian.Uint32(enc[4*(i-1):])
		switch {
		case i%nk == 0:
			t = subWord(bits.RotateLeft32(t, 8)) ^ rcon<<24
			rcon <<= 1
			if rcon > 0xff {
				rcon ^= 0x11b // reduce modulo the AES polynomial
			}
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		binary.BigEndian.PutUint32(enc[4*i:], binary.BigEndian.Uint32(enc[4*(i-nk):])^t)
	}
}

// invertKey writes the round keys of the equivalent inverse cipher (FIPS
// 197 section 5.3.5) to dec: the encryption round keys in reverse order,
// the inner ones passed through InvMixColumns, as AESDEC expects.
func invertKey(dec, enc []byte, nr int) {
	copy(dec[:16], enc[16*nr:])
	for i := 1; i < nr; i++ {
		invMixColumns((*[16]byte)(dec[16*i:]), (*[16]byte)(enc[16*(nr-i):]))
	}
	copy(dec[16*nr:], enc[:16])
}
