package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"

	"kmsagent/blockdev/xts"
)

// sectorCipher encrypts a keyslot area the way dm-crypt would a disk:
// 512-byte sectors, each with an IV derived from its sector number,
// counted from the start of the area.
type sectorCipher interface {
	encryptSector(dst, src []byte, sector uint64)
	decryptSector(dst, src []byte, sector uint64)
	// wipe zeroes the expanded key where the cipher lets us.
	wipe()
}

// newAreaCipher builds the cipher for a keyslot area from a dm-crypt
// cipher spec. Only what LUKS2 keyslots use is supported: AES in XTS
// (plain or plain64 IVs) and CBC (essiv:sha256, plain or plain64 IVs).
func newAreaCipher(spec string, key []byte) (sectorCipher, error) {
	parts := strings.SplitN(spec, "-", 3)
	if len(parts) != 3 || parts[0] != "aes" {
		return nil, fmt.Errorf("%w: keyslot area encryption %q", ErrUnsupported, spec)
	}
	mode, iv := parts[1], parts[2]
	switch {
	case mode == "xts" && (iv == "plain64" || iv == "plain"):
		if len(key) != 32 && len(key) != 64 {
			return nil, fmt.Errorf("%w: %s with a %d-bit key", ErrUnsupported, spec, len(key)*8)
		}
		// The fast package matters here: every unlock decrypts a
		// 256 KiB split key, and a boot unlocks many volumes at once.
		c, err := xts.New(key)
		if err != nil {
			return nil, fmt.Errorf("luks2: %s: %w", spec, err)
		}
		return &xtsCipher{c: c, iv32: iv == "plain"}, nil
	case mode == "cbc" && (iv == "essiv:sha256" || iv == "plain64" || iv == "plain"):
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnsupported, spec, err)
		}
		c := &cbcCipher{b: b, iv32: iv == "plain"}
		if iv == "essiv:sha256" {
			// ESSIV encrypts the sector number under the hash of the key.
			salt := sha256.Sum256(key)
			c.essiv, err = aes.NewCipher(salt[:])
			clear(salt[:])
			if err != nil {
				return nil, fmt.Errorf("luks2: %s: %w", spec, err)
			}
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: keyslot area encryption %q", ErrUnsupported, spec)
}

type xtsCipher struct {
	c    *xts.Cipher
	iv32 bool
}

func (x *xtsCipher) tweak(sector uint64) uint64 {
	if x.iv32 {
		return sector & 0xffffffff
	}
	return sector
}

func (x *xtsCipher) encryptSector(dst, src []byte, sector uint64) {
	x.c.EncryptSector(dst, src, x.tweak(sector))
}

func (x *xtsCipher) wipe() { x.c.Wipe() }

func (x *xtsCipher) decryptSector(dst, src []byte, sector uint64) {
	x.c.DecryptSector(dst, src, x.tweak(sector))
}

// cbcCipher is only ever read (old keyslots); crypto/aes gives no way to
// zero its key schedule.
type cbcCipher struct {
	b     cipher.Block
	essiv cipher.Block
	iv32  bool
}

func (c *cbcCipher) wipe() {}

func (c *cbcCipher) iv(sector uint64) []byte {
	iv := make([]byte, aes.BlockSize)
	if c.iv32 {
		binary.LittleEndian.PutUint32(iv, uint32(sector))
	} else {
		binary.LittleEndian.PutUint64(iv, sector)
	}
	if c.essiv != nil {
		c.essiv.Encrypt(iv, iv)
	}
	return iv
}

func (c *cbcCipher) encryptSector(dst, src []byte, sector uint64) {
	cipher.NewCBCEncrypter(c.b, c.iv(sector)).CryptBlocks(dst, src)
}

func (c *cbcCipher) decryptSector(dst, src []byte, sector uint64) {
	cipher.NewCBCDecrypter(c.b, c.iv(sector)).CryptBlocks(dst, src)
}

// cryptArea runs a whole number of sectors through c in place.
func cryptArea(c sectorCipher, buf []byte, encrypt bool) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		if encrypt {
			c.encryptSector(s, s, uint64(i))
		} else {
			c.decryptSector(s, s, uint64(i))
		}
	}
}
