package cryptfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
)

var _ fs.NodeLseeker = (*node)(nil)

// seekHoleTries bounds the search for a whole-block hole in a file whose
// holes are all shorter than a cipher block; giving up answers end of
// file, which is always correct.
const seekHoleTries = 64

// Lseek implements fs.NodeLseeker for SEEK_DATA and SEEK_HOLE from the
// holes of the cipher file. A plaintext block is a hole when its whole
// cipher block is; answers are conservative: data may be reported where a
// hole is, never the reverse.
func (n *node) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	fh, ok := f.(*fileHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, syscall.EINVAL
	}
	n.content.RLock()
	defer n.content.RUnlock()
	size, cipherSize, e := n.plainSizeOf(fh)
	if e != 0 {
		return 0, e
	}
	if off >= size {
		return 0, syscall.ENXIO
	}
	blockOf := func(cipherOff int64) uint64 {
		if cipherOff < contentenc.HeaderLen {
			return 0
		}
		return uint64(cipherOff-contentenc.HeaderLen) / cbs
	}
	if whence == unix.SEEK_DATA {
		b := off / bs
		for range seekHoleTries {
			cd, err := unix.Seek(fh.fd, int64(contentenc.CipherOff(b)), unix.SEEK_DATA)
			if err == unix.ENXIO {
				return 0, syscall.ENXIO
			}
			if err != nil {
				return 0, errno(err)
			}
			b = max(b, blockOf(cd))
			if b*bs >= size {
				return 0, syscall.ENXIO
			}
			// The file system below has its own block size, so data
			// there may belong to the neighbouring cipher block: look.
			if !n.zeroCipherBlock(fh.fd, b) {
				return max(off, b*bs), 0
			}
			b++
		}
		return max(off, b*bs), 0
	}
	b := off / bs
	for range seekHoleTries {
		ch, err := unix.Seek(fh.fd, int64(contentenc.CipherOff(b)), unix.SEEK_HOLE)
		if err != nil {
			return 0, errno(err)
		}
		if uint64(ch) >= cipherSize {
			return size, 0
		}
		// The first block starting inside the hole.
		b2 := blockOf(ch)
		if contentenc.CipherOff(b2) < uint64(ch) {
			b2++
		}
		if b2*bs >= size {
			return size, 0
		}
		cd, err := unix.Seek(fh.fd, int64(contentenc.CipherOff(b2)), unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && uint64(cd) >= contentenc.CipherOff(b2+1)) {
			return max(off, b2*bs), 0
		}
		if err != nil {
			return 0, errno(err)
		}
		b = blockOf(cd) + 1
	}
	return size, 0
}

// zeroCipherBlock reports whether cipher block b reads as all zeros (a
// hole), treating read errors as data.
func (n *node) zeroCipherBlock(fd int, b uint64) bool {
	bp := blockPool.Get().(*[]byte)
	defer blockPool.Put(bp)
	k, err := preadFull(fd, *bp, int64(contentenc.CipherOff(b)))
	if err != nil || k < cbs {
		return false
	}
	return isZero((*bp)[:k])
}
