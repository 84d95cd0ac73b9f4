package xts

import (
	"fmt"
	"runtime"
	"sync"
)

// parallelChunk is the least work worth a goroutine: about 100 µs at the
// assembly's speed, far above the cost of starting one and waiting for it.
const parallelChunk = 256 << 10

// EncryptSectors encrypts len(src)/sectorSize consecutive sectors, the
// first numbered firstSector, from src into dst. len(src) must be a
// multiple of sectorSize, which must be a non-zero multiple of 16 (512
// and 4096 for LUKS2). Sector numbers wrap around after 2^64-1. Large
// buffers are split between up to GOMAXPROCS goroutines. Buffer rules
// and panics are those of EncryptSector.
func (c *Cipher) EncryptSectors(dst, src []byte, sectorSize int, firstSector uint64) {
	c.sectors(dst, src, sectorSize, firstSector, false)
}

// DecryptSectors is the inverse of EncryptSectors.
func (c *Cipher) DecryptSectors(dst, src []byte, sectorSize int, firstSector uint64) {
	c.sectors(dst, src, sectorSize, firstSector, true)
}

func (c *Cipher) sectors(dst, src []byte, sectorSize int, first uint64, decrypt bool) {
	c.checkUsable()
	checkSectorSize(sectorSize)
	if len(src)%sectorSize != 0 {
		panic(fmt.Sprintf("xts: %d bytes are not a whole number of %d-byte sectors", len(src), sectorSize))
	}
	checkBuffers(dst, src)
	dst = dst[:len(src)]

	n := len(src) / sectorSize
	workers := min(runtime.GOMAXPROCS(0), len(src)/parallelChunk, n)
	if workers <= 1 {
		c.run(dst, src, sectorSize, first, decrypt)
		return
	}
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for s := 0; s < n; s += per {
		e := min(s+per, n)
		d, p, num := dst[s*sectorSize:e*sectorSize], src[s*sectorSize:e*sectorSize], first+uint64(s)
		if e == n {
			// The calling goroutine takes the last share instead of idling.
			c.run(d, p, sectorSize, num, decrypt)
			break
		}
		wg.Go(func() { c.run(d, p, sectorSize, num, decrypt) })
	}
	wg.Wait()
}

// run processes whole sectors one after another.
func (c *Cipher) run(dst, src []byte, sectorSize int, sector uint64, decrypt bool) {
	for off := 0; off < len(src); off += sectorSize {
		c.crypt(dst[off:off+sectorSize], src[off:off+sectorSize], sector, decrypt)
		sector++
	}
}
