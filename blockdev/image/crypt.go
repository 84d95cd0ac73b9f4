package image

import (
	"fmt"

	"kmsagent/blockdev/xts"
)

// ivUnit is the unit of dm-crypt's plain64 sector number for LUKS2.
const ivUnit = 512

// sectorCrypt encrypts and decrypts payload sectors as dm-crypt does for
// a LUKS2 crypt segment.
type sectorCrypt struct {
	c          *xts.Cipher
	sectorSize int
	ivTweak    uint64
}

func newSectorCrypt(key []byte, sectorSize int, ivTweak uint64) (*sectorCrypt, error) {
	if sectorSize < ivUnit || sectorSize > 4096 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("sector size %d is not a power of two from 512 to 4096", sectorSize)
	}
	c, err := xts.New(key)
	if err != nil {
		return nil, err
	}
	return &sectorCrypt{c: c, sectorSize: sectorSize, ivTweak: ivTweak}, nil
}

// iv is the plain64 IV of payload sector n (counted in sectorSize units).
func (s *sectorCrypt) iv(n uint64) uint64 {
	return n*uint64(s.sectorSize/ivUnit) + s.ivTweak
}

// crypt encrypts (or decrypts) buf in place; buf holds whole sectors, the
// first being payload sector first. The xts package's own batching cannot
// be used: it numbers consecutive sectors 1 apart, while 4096-byte LUKS2
// sectors are 8 apart. Callers spread chunks over the cores.
func (s *sectorCrypt) crypt(buf []byte, first uint64, decrypt bool) {
	if len(buf)%s.sectorSize != 0 {
		panic("image: partial sector")
	}
	for i := 0; len(buf) > 0; i++ {
		sec := buf[:s.sectorSize]
		if decrypt {
			s.c.DecryptSector(sec, sec, s.iv(first+uint64(i)))
		} else {
			s.c.EncryptSector(sec, sec, s.iv(first+uint64(i)))
		}
		buf = buf[s.sectorSize:]
	}
}

func (s *sectorCrypt) wipe() { s.c.Wipe() }
