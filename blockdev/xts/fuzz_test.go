package xts

import (
	"bytes"
	"testing"
)

// FuzzXTS compares both implementations with x/crypto/xts on arbitrary
// keys, data and sector numbers. The first input byte picks the key size;
// data is cut to whole blocks.
func FuzzXTS(f *testing.F) {
	f.Add(make([]byte, 64+512), uint64(0))
	f.Add(bytes.Repeat([]byte{0xff}, 1+32+4096), ^uint64(0))
	f.Add(append([]byte{1}, make([]byte, 64+144)...), uint64(1)<<63)
	f.Fuzz(func(t *testing.T, in []byte, sector uint64) {
		if len(in) < 1 {
			return
		}
		keyLen := 32
		if in[0]&1 == 1 {
			keyLen = 64
		}
		in = in[1:]
		if len(in) < keyLen+BlockSize {
			return
		}
		key, data := in[:keyLen], in[keyLen:]
		data = data[:len(data)/BlockSize*BlockSize]
		ref := reference(t, key)
		want := make([]byte, len(data))
		ref.Encrypt(want, data, sector)

		for _, im := range impls(t) {
			c := mustCipher(t, key, im)
			got := make([]byte, len(data))
			c.EncryptSector(got, data, sector)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: ciphertext differs from x/crypto/xts", im.name)
			}
			c.DecryptSector(got, got, sector)
			if !bytes.Equal(got, data) {
				t.Fatalf("%s: in-place decryption does not restore the plaintext", im.name)
			}
		}
	})
}
