package xts

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

const (
	// parallelMin is the smallest buffer that EncryptSectors and
	// DecryptSectors share between goroutines; below it, starting and
	// waking a helper costs more than it can save.
	parallelMin = 256 << 10
	// chunkBytes is the unit of work handed out to goroutines, about
	// 10 µs at the assembly's speed: small enough that the last chunks
	// finish close together, large enough that claiming one is free.
	chunkBytes = 64 << 10
)

// EncryptSectors encrypts len(src)/sectorSize consecutive sectors, the
// first numbered firstSector, from src into dst. len(src) must be a
// multiple of sectorSize, which must be a non-zero multiple of 16 (512
// and 4096 for LUKS2). Sector numbers wrap around after 2^64-1. Buffers
// of parallelMin bytes or more are shared between up to GOMAXPROCS
// goroutines. Buffer rules and panics are those of EncryptSector.
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

	procs := runtime.GOMAXPROCS(0)
	if len(src) < parallelMin || procs == 1 {
		c.run(dst, src, sectorSize, first, decrypt)
		return
	}

	// The caller starts on the chunks at once and helpers join whenever
	// the scheduler runs them. The caller waits for claimed chunks, not
	// for helpers: one that wakes up after all chunks are taken leaves
	// without touching the buffers, so a slow wake-up (common on busy
	// virtual machines) never makes the call slower than doing it alone.
	perChunk := max(1, chunkBytes/sectorSize) // sectors per chunk
	nSectors := len(src) / sectorSize
	chunks := (nSectors + perChunk - 1) / perChunk
	var next atomic.Int64
	var pending sync.WaitGroup
	pending.Add(chunks)
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= chunks {
				return
			}
			s, e := i*perChunk*sectorSize, min((i+1)*perChunk, nSectors)*sectorSize
			c.run(dst[s:e], src[s:e], sectorSize, first+uint64(i*perChunk), decrypt)
			pending.Done()
		}
	}
	for range min(procs, chunks) - 1 {
		go work()
	}
	work()
	pending.Wait()
}

// run processes whole sectors one after another.
func (c *Cipher) run(dst, src []byte, sectorSize int, sector uint64, decrypt bool) {
	for off := 0; off < len(src); off += sectorSize {
		c.crypt(dst[off:off+sectorSize], src[off:off+sectorSize], sector, decrypt)
		sector++
	}
}
