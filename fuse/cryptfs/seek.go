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

// Lseek implements fs.NodeLseeker for SEEK_DATA and SEEK_HOLE. A
// plaintext block is a hole when its cipher block reads as all zeros. The
// cipher file's own data and holes point to the candidates, which are
// read to decide, so the answers match a plain file's where holes span a
// few blocks. They are conservative: a lone hole block between data
// blocks is not seen by the file system (the blocks around it share its
// file system blocks) and may be reported as data; a hole is never
// reported where there is data.
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
	// A hole block shares the file system blocks at its ends with the
	// data of its neighbours (or the header), where the file system sees
	// data, so the file system's holes only say where to look.
	b := off / bs
	for range seekHoleTries {
		if b*bs >= size {
			return size, 0
		}
		if n.zeroCipherBlock(fh.fd, b) {
			return max(off, b*bs), 0
		}
		ch, err := unix.Seek(fh.fd, int64(contentenc.CipherOff(b)), unix.SEEK_HOLE)
		if err != nil {
			return 0, errno(err)
		}
		if uint64(ch) >= cipherSize {
			return size, 0
		}
		// The block holding ch has never been written: a hole.
		b = max(b+1, blockOf(ch))
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
