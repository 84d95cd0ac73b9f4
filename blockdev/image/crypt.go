package image

import (
	"fmt"
	"runtime"
	"sync"

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
// first being payload sector first. The work is split between all cores.
// The xts package's own batching cannot be used: it numbers consecutive
// sectors 1 apart, while 4096-byte LUKS2 sectors are 8 apart.
func (s *sectorCrypt) crypt(buf []byte, first uint64, decrypt bool) {
	n := len(buf) / s.sectorSize
	if n*s.sectorSize != len(buf) {
		panic("image: partial sector")
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, len(buf)/(256<<10)))
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, n)
		if lo >= hi {
			break
		}
		run := func() {
			for i := lo; i < hi; i++ {
				sec := buf[i*s.sectorSize : (i+1)*s.sectorSize]
				if decrypt {
					s.c.DecryptSector(sec, sec, s.iv(first+uint64(i)))
				} else {
					s.c.EncryptSector(sec, sec, s.iv(first+uint64(i)))
				}
			}
		}
		if w == workers-1 || hi == n {
			run()
		} else {
			wg.Add(1)
			go func() { defer wg.Done(); run() }()
		}
	}
	wg.Wait()
}

func (s *sectorCrypt) wipe() { s.c.Wipe() }
