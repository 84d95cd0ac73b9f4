package xts

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
)

// BlockSize is the AES block size; sectors must be a multiple of it.
const BlockSize = 16

// scheduleLen is the size of an AES-256 key schedule, 15 round keys, and
// so large enough for AES-128's 11.
const scheduleLen = 15 * BlockSize

// ErrKeySize reports an XTS key that is neither 32 nor 64 bytes long.
var ErrKeySize = errors.New("xts: invalid key size")

// Cipher encrypts and decrypts sectors with one XTS key. It is safe for
// concurrent use by several goroutines, except that Wipe must not overlap
// any other call.
type Cipher struct {
	// Assembly path: nr is 10 or 14 and the schedules are filled in.
	// enc1 and dec1 are the data key's encryption and inverse schedules,
	// enc2 the tweak key's encryption schedule.
	nr               int
	enc1, dec1, enc2 [scheduleLen]byte
	// vaes: sectors that are a multiple of 256 bytes go through the
	// sixteen-block VAES routines.
	vaes bool

	// Generic path: crypto/aes blocks for the data and tweak keys.
	b1, b2 cipher.Block

	wiped bool
}

// New returns a Cipher for a 32-byte (XTS-AES-128) or 64-byte
// (XTS-AES-256) key: the data key followed by the tweak key, the order in
// which LUKS2 stores the volume key of aes-xts-plain64. New keeps no
// reference to key; the caller may wipe it as soon as New returns.
//
// New does not reject keys whose halves are equal (IEEE P1619's own first
// test vector has them); a key drawn from a CSPRNG never has them.
func New(key []byte) (*Cipher, error) {
	return newCipher(key, haveAsm)
}

// newCipher is New with the implementation chosen by the caller, so that
// tests can run the generic path on machines that have AES-NI.
func newCipher(key []byte, useAsm bool) (*Cipher, error) {
	if len(key) != 32 && len(key) != 64 {
		return nil, fmt.Errorf("%w: %d bytes, want 32 (AES-128) or 64 (AES-256)", ErrKeySize, len(key))
	}
	k1, k2 := key[:len(key)/2], key[len(key)/2:]
	c := new(Cipher)
	if useAsm {
		c.nr = len(k1)/4 + 6
		expandKey(c.enc1[:], k1)
		invertKey(c.dec1[:], c.enc1[:], c.nr)
		expandKey(c.enc2[:], k2)
		c.vaes = haveVAES
		return c, nil
	}
	var err error
	if c.b1, err = aes.NewCipher(k1); err != nil {
		return nil, fmt.Errorf("xts: data key: %w", err)
	}
	if c.b2, err = aes.NewCipher(k2); err != nil {
		return nil, fmt.Errorf("xts: tweak key: %w", err)
	}
	return c, nil
}

// EncryptSector encrypts one sector, src, into dst with the given sector
// number as plain64 tweak. len(src) must be a non-zero multiple of 16 and
// dst at least as long; dst and src may be the same buffer but must not
// overlap otherwise. It panics on misuse, like crypto/cipher.
func (c *Cipher) EncryptSector(dst, src []byte, sector uint64) {
	c.checkSector(dst, src)
	c.crypt(dst[:len(src)], src, sector, false)
}

// DecryptSector is the inverse of EncryptSector.
func (c *Cipher) DecryptSector(dst, src []byte, sector uint64) {
	c.checkSector(dst, src)
	c.crypt(dst[:len(src)], src, sector, true)
}

// Wipe zeroes the key schedules of the assembly path and makes the Cipher
// unusable: any later call panics. On the generic path the schedules
// belong to crypto/aes, which offers no way to clear them; Wipe drops the
// references so they become garbage.
func (c *Cipher) Wipe() {
	clear(c.enc1[:])
	clear(c.dec1[:])
	clear(c.enc2[:])
	c.nr = 0
	c.b1, c.b2 = nil, nil
	c.wiped = true
}

// crypt runs one sector on whichever path the Cipher was built for.
// Arguments have been checked.
func (c *Cipher) crypt(dst, src []byte, sector uint64, decrypt bool) {
	switch {
	case c.vaes && len(src)%256 == 0 && decrypt:
		decryptSectorVAES(c.nr, &c.dec1[0], &c.enc2[0], sector, &dst[0], &src[0], len(src))
	case c.vaes && len(src)%256 == 0:
		encryptSectorVAES(c.nr, &c.enc1[0], &c.enc2[0], sector, &dst[0], &src[0], len(src))
	case c.nr != 0 && decrypt:
		decryptSectorAsm(c.nr, &c.dec1[0], &c.enc2[0], sector, &dst[0], &src[0], len(src))
	case c.nr != 0:
		encryptSectorAsm(c.nr, &c.enc1[0], &c.enc2[0], sector, &dst[0], &src[0], len(src))
	default:
		c.cryptGeneric(dst, src, sector, decrypt)
	}
}

// checkSector panics unless dst and src are a valid single-sector call.
func (c *Cipher) checkSector(dst, src []byte) {
	c.checkUsable()
	checkSectorSize(len(src))
	checkBuffers(dst, src)
}

func (c *Cipher) checkUsable() {
	if c.wiped {
		panic("xts: Cipher used after Wipe")
	}
}

func checkSectorSize(n int) {
	if n < BlockSize || n%BlockSize != 0 {
		panic(fmt.Sprintf("xts: sector of %d bytes, want a non-zero multiple of %d (no ciphertext stealing)", n, BlockSize))
	}
}

// checkBuffers panics if dst is too short or overlaps src other than
// exactly: the assembly loads eight blocks before storing any, so a
// shifted overlap would read already-written output.
func checkBuffers(dst, src []byte) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("xts: output of %d bytes for %d bytes of input", len(dst), len(src)))
	}
	if inexactOverlap(dst[:len(src)], src) {
		panic("xts: invalid buffer overlap")
	}
}
