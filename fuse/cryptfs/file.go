package cryptfs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
)

const (
	bs  = contentenc.DefaultBS
	cbs = contentenc.CipherBS
	// maxBatch is the most blocks encrypted or decrypted in one go: a
	// 1 MiB request plus one block on each side for misalignment.
	maxBatch = maxWrite/bs + 2
)

// fileHandle is an open regular file: a descriptor of the cipher file,
// always opened for reading (read-modify-write needs it), and the file ID
// read from its header, cached while the header generation of the node
// is unchanged.
type fileHandle struct {
	fd int

	mu    sync.Mutex
	id    [contentenc.FileIDLen]byte
	idOK  bool
	idGen uint64
}

// Buffers for whole requests, so the data path does not allocate.
var (
	plainPool  = sync.Pool{New: func() any { b := make([]byte, maxBatch*bs); return &b }}
	cipherPool = sync.Pool{New: func() any { b := make([]byte, maxBatch*cbs); return &b }}
	blockPool  = sync.Pool{New: func() any { b := make([]byte, cbs); return &b }}
)

func getBuf(p *sync.Pool, n int) (*[]byte, []byte) {
	bp := p.Get().(*[]byte)
	if cap(*bp) < n {
		b := make([]byte, n)
		return nil, b
	}
	return bp, (*bp)[:n]
}

func putBuf(p *sync.Pool, bp *[]byte) {
	if bp != nil {
		p.Put(bp)
	}
}

// zeroBlock is a block of zeros for padding; never written to.
var zeroBlock [bs]byte

// cipherOpenFlags maps the flags of an open(2) in the plaintext view to
// those for the cipher file: always readable (and writable on a
// read-write mount), never appending (offsets are computed here), no
// O_DIRECT (cipher I/O is not block aligned), no symlink following.
func (r *rootData) cipherOpenFlags(flags uint32) (int, syscall.Errno) {
	acc := int(flags) & unix.O_ACCMODE
	o := unix.O_RDWR
	if r.ro {
		if acc != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
			return 0, syscall.EROFS
		}
		o = unix.O_RDONLY
	}
	o |= int(flags) & (unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME | unix.O_TRUNC)
	return o | unix.O_NOFOLLOW | unix.O_CLOEXEC, 0
}

// Open implements fs.NodeOpener.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	oflags, e := n.r.cipherOpenFlags(flags)
	if e != 0 {
		return nil, 0, e
	}
	p, pfd, cName, e := n.locate()
	if e != 0 {
		return nil, 0, e
	}
	defer p.closeDir()
	trunc := flags&unix.O_TRUNC != 0
	if trunc {
		n.content.Lock()
	}
	fd, err := unix.Openat(pfd, cName, oflags, 0)
	if err != nil && int(flags)&unix.O_ACCMODE == unix.O_RDONLY && !trunc &&
		(err == unix.EACCES || err == unix.EPERM || err == unix.EROFS) {
		// Read-only cipher file or file system: reading still works.
		fd, err = unix.Openat(pfd, cName, oflags&^unix.O_ACCMODE|unix.O_RDONLY, 0)
	}
	if trunc {
		if err == nil {
			n.hdrGen++
		}
		n.content.Unlock()
	}
	if err != nil {
		return nil, 0, errno(err)
	}
	// Flush does nothing (writes are never buffered here), so spare the
	// kernel the FLUSH round trip on every close.
	return &fileHandle{fd: fd}, fuse.FOPEN_NOFLUSH, 0
}

// fileID returns the file ID from the header of the open file. An empty
// file has none: with create, a new header is written (the caller holds
// the content lock exclusively); without, ok is false.
//
// The returned slice aliases the handle's cache, which only changes with
// the content lock held exclusively, so it stays valid while the caller
// holds the content lock in either mode.
func (fh *fileHandle) fileID(n *node, create bool) (id []byte, ok bool, e syscall.Errno) {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	if fh.idOK && fh.idGen == n.hdrGen {
		return fh.id[:], true, 0
	}
	var buf [contentenc.HeaderLen]byte
	k, err := preadFull(fh.fd, buf[:], 0)
	if err != nil {
		return id, false, errno(err)
	}
	switch {
	case k == 0:
		if !create {
			return id, false, 0
		}
		h, err := contentenc.RandomHeader()
		if err != nil {
			return id, false, syscall.EIO
		}
		if err := pwriteFull(fh.fd, h.Pack(), 0); err != nil {
			return id, false, errno(err)
		}
		fh.id = h.ID
	default:
		h, err := contentenc.ParseHeader(buf[:k])
		if err != nil {
			ino := n.StableAttr().Ino
			if n.r.reported.first(reportKey{kind: reportHeader, ino: ino}) {
				n.r.log.Warn("cryptfs: invalid file header", "file", n.plainPath(), "ino", ino, "err", err)
			}
			return id, false, syscall.EIO
		}
		fh.id = h.ID
	}
	fh.idOK, fh.idGen = true, n.hdrGen
	return fh.id[:], true, 0
}

// preadFull reads until buf is full or end of file.
func preadFull(fd int, buf []byte, off int64) (int, error) {
	done := 0
	for done < len(buf) {
		k, err := unix.Pread(fd, buf[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if k == 0 {
			break
		}
		done += k
	}
	return done, nil
}

func pwriteFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		k, err := unix.Pwrite(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		buf = buf[k:]
		off += int64(k)
	}
	return nil
}

// reportBlock logs a block that failed to decrypt, once per file and
// block; fd and id are the file's descriptor and file ID. A header copied
// from another file fails every block, so that is recognised (see
// foreignHeader) and logged once for the file instead.
func (n *node) reportBlock(fd int, id []byte, err error, fallback uint64) {
	blockNo := fallback
	var be *contentenc.BlockError
	if errors.As(err, &be) {
		blockNo = be.BlockNo
	}
	ino := n.StableAttr().Ino
	rep := &n.r.reported
	hdrKey := reportKey{kind: reportHeaderID, ino: ino}
	blockKey := reportKey{kind: reportBlock, ino: ino, block: blockNo}
	if rep.known(hdrKey) || rep.known(blockKey) {
		return
	}
	if errors.Is(err, contentenc.ErrAuth) && n.foreignHeader(fd, id, blockNo) {
		if rep.first(hdrKey) {
			n.r.log.Warn("cryptfs: file header does not match the file's blocks (copied from another file?)", "file", n.plainPath(), "ino", ino)
		}
		return
	}
	if rep.first(blockKey) {
		n.r.log.Warn("cryptfs: corrupt or tampered block", "file", n.plainPath(), "ino", ino, "block", blockNo, "err", err)
	}
}

// foreignProbe is how many other blocks foreignHeader tries.
const foreignProbe = 4

// foreignHeader reports whether the file ID looks wrong rather than block
// bad alone: some other data blocks exist and none of them authenticates
// either. Holes and a file with no other block prove nothing.
func (n *node) foreignHeader(fd int, id []byte, bad uint64) bool {
	var ct [cbs]byte
	var pt [bs]byte
	tried := 0
	for b := uint64(0); tried < foreignProbe && b < bad+foreignProbe+1; b++ {
		if b == bad {
			continue
		}
		k, err := preadFull(fd, ct[:], int64(contentenc.CipherOff(b)))
		if err != nil || k == 0 {
			break
		}
		if k == cbs && isZeroBlock(ct[:]) {
			continue
		}
		tried++
		if _, err := n.r.ce.DecryptBlock(pt[:0], ct[:k], b, id); err == nil {
			return false
		}
	}
	return tried > 0
}

func isZeroBlock(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Read implements fs.NodeReader.
func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fh, ok := f.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if len(dest) == 0 || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	n.content.RLock()
	defer n.content.RUnlock()
	id, ok, e := fh.fileID(n, false)
	if e != 0 || !ok {
		return fuse.ReadResultData(nil), e
	}
	return n.readBlocks(fh.fd, id, len(dest), uint64(off))
}

const (
	// readAheadMin is the request size from which readBlocks takes a
	// read as sequential.
	readAheadMin = 128 << 10
	// readAheadCipher is how far beyond a sequential read readBlocks
	// asks the cipher file system to fetch.
	readAheadCipher = 4 << 20
)

// readBlocks reads plaintext [off, off+size): it reads the cipher blocks
// into a pooled buffer, decrypts them there (contentenc.DecryptBlocks) and
// returns the plaintext in that buffer, which goes back to the pool once
// the reply is sent. The result is short only at end of file. Any bad
// block fails the whole request.
func (n *node) readBlocks(fd int, id []byte, size int, off uint64) (fuse.ReadResult, syscall.Errno) {
	first := off / bs
	last := (off + uint64(size) - 1) / bs
	nb := int(last - first + 1)
	cp, cbuf := getBuf(&cipherPool, nb*cbs)
	res := &pooledResult{pool: &cipherPool, buf: cp}
	k, err := preadFull(fd, cbuf, int64(contentenc.CipherOff(first)))
	if err != nil {
		res.Done()
		return nil, errno(err)
	}
	if k == len(cbuf) && size >= readAheadMin {
		// A large read is the kernel's read-ahead of a sequential
		// reader: have the cipher file system fetch what comes next
		// while this part is decrypted and sent, so the disk is busy
		// while we are.
		end := int64(contentenc.CipherOff(first)) + int64(k)
		_ = unix.Fadvise(fd, end, int64(readAheadCipher), unix.FADV_WILLNEED)
	}
	plain, err := n.r.ce.DecryptBlocks(cbuf[:k], first, id)
	if err != nil {
		n.reportBlock(fd, id, err, first)
		res.Done()
		return nil, syscall.EIO
	}
	skip := int(off % bs)
	if skip >= len(plain) {
		plain = plain[:0]
	} else {
		plain = plain[skip:min(len(plain), skip+size)]
	}
	res.data = plain
	return res, 0
}

// pooledResult is a read reply held in a pooled buffer, returned to the
// pool when go-fuse has sent it (Done).
//
// Slices matters: for a result without it, go-fuse with splice disabled
// takes the bytes and calls Done before it writes the reply, which would
// hand the buffer to the next request while the kernel has yet to copy
// it (TestStress caught that). With it, go-fuse writes the slices and
// then calls Done.
type pooledResult struct {
	pool *sync.Pool
	buf  *[]byte
	data []byte
	vec  [1][]byte // Slices' answer, kept here so it does not allocate
}

func (r *pooledResult) Slices() ([][]byte, fuse.Status) {
	r.vec[0] = r.data
	return r.vec[:], fuse.OK
}
func (r *pooledResult) Size() int { return len(r.data) }

// Bytes copies, so that a go-fuse that calls Done right after it (as it
// does for results without Slices) cannot send a recycled buffer.
func (r *pooledResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if cap(buf) < len(r.data) {
		buf = make([]byte, len(r.data))
	}
	return buf[:copy(buf[:len(r.data)], r.data)], fuse.OK
}

func (r *pooledResult) Done() {
	putBuf(r.pool, r.buf)
	r.buf, r.data = nil, nil
}

// Write implements fs.NodeWriter.
func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	fh, ok := f.(*fileHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	if n.r.ro {
		return 0, syscall.EROFS
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(data) == 0 {
		return 0, 0
	}
	n.content.Lock()
	defer n.content.Unlock()
	if e := n.writeLocked(fh, data, uint64(off)); e != 0 {
		return 0, e
	}
	return uint32(len(data)), 0
}

// plainSizeOf returns the current plaintext size of the open file.
func (n *node) plainSizeOf(fh *fileHandle) (plain, cipher uint64, e syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstat(fh.fd, &st); err != nil {
		return 0, 0, errno(err)
	}
	cipher = uint64(st.Size)
	return n.r.plainSize(cipher, n.StableAttr().Ino, n.plainPath), cipher, 0
}

// writeLocked writes data at off. The caller holds the content lock
// exclusively. A partial last block before a gap is first padded to a
// full block, so the gap consists of whole all-zero cipher blocks (holes).
//
// A full file system must fail the write before any old byte of the file
// changed, and a failed write must leave the size as it was: a write
// that rewrites a block reserves its space first (see reserve); one that
// only appends is truncated back if it fails.
func (n *node) writeLocked(fh *fileHandle, data []byte, off uint64) syscall.Errno {
	size, cipherSize, e := n.plainSizeOf(fh)
	if e != 0 {
		return e
	}
	end := off + uint64(len(data))
	first, last := off/bs, (end-1)/bs
	rest := size % bs
	pad := rest != 0 && off >= size-rest+bs
	// The blocks written; the last one runs to the end of the write or,
	// if the file is longer, to the old end within that block.
	blocks := span{contentenc.CipherOff(first), contentenc.CipherSize(max(end, min(size, (last+1)*bs)))}
	// A write that touches no old byte (a new file, or streaming appends
	// to a file that ends at a block boundary) is undone by truncating
	// back if it fails, which costs nothing while it does not. Any other
	// write rewrites a block in place (the old last block, padded or
	// extended) and must not fail midway: it reserves first.
	appending := !pad && blocks.off >= cipherSize
	if !appending {
		var padding span
		if pad {
			padding = span{contentenc.CipherOff(size / bs), contentenc.CipherOff(size/bs + 1)}
		}
		if e := n.r.reserve(fh.fd, padding, blocks); e != 0 {
			return e
		}
	}
	id, _, e := fh.fileID(n, true)
	if e == 0 {
		e = n.writeBlocks(fh, id, data, off, size, pad)
	}
	if e != 0 && appending {
		if unix.Ftruncate(fh.fd, int64(cipherSize)) == nil && cipherSize == 0 {
			n.hdrGen++ // the new header is gone
		}
	}
	return e
}

// writeBlocks does the writing for writeLocked: the padding of the old
// last block if pad, then data in batches that fit the pooled buffers.
func (n *node) writeBlocks(fh *fileHandle, id, data []byte, off, size uint64, pad bool) syscall.Errno {
	if pad {
		rest := size % bs
		if e := n.writeRange(fh, id, zeroBlock[:bs-rest], size, size); e != 0 {
			return e
		}
		size += bs - rest
	}
	for len(data) > 0 {
		chunk := data
		if limit := (maxBatch-2)*bs - int(off%bs); len(chunk) > limit {
			chunk = chunk[:limit]
		}
		if e := n.writeRange(fh, id, chunk, off, size); e != 0 {
			return e
		}
		off += uint64(len(chunk))
		size = max(size, off)
		data = data[len(chunk):]
	}
	return 0
}

// span is a range [off, end) of a cipher file; empty if end <= off.
type span struct{ off, end uint64 }

// reserve allocates the cipher file ranges spans (in file order) without
// changing the file size (FALLOC_FL_KEEP_SIZE) before they are written,
// as gocryptfs does. A write that runs out of space midway would leave a
// cut cipher block, which no longer authenticates: the block's old
// content, possibly fsync'ed data, is lost, and the file size no longer
// matches what was acknowledged. Reserving first turns a full file system
// into ENOSPC before anything changed. Only the ranges are reserved, not
// what lies between them, so the holes of a sparse file stay holes. On an
// allocated range fallocate is only an extent lookup. A file system
// without fallocate goes without the protection (logged once); appends
// are still undone when they fail.
func (r *rootData) reserve(fd int, spans ...span) syscall.Errno {
	if r.noFallocate.Load() {
		return 0
	}
	var cur span
	for _, s := range spans {
		switch {
		case s.end <= s.off:
		case cur.end > cur.off && cur.end == s.off:
			cur.end = s.end // adjacent: one call
		default:
			if e := r.fallocate(fd, cur); e != 0 {
				return e
			}
			cur = s
		}
	}
	return r.fallocate(fd, cur)
}

// fallocate reserves s for reserve; an empty span is nothing to do.
func (r *rootData) fallocate(fd int, s span) syscall.Errno {
	for s.end > s.off {
		err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, int64(s.off), int64(s.end-s.off))
		switch err {
		case nil:
			return 0
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP:
			if !r.noFallocate.Swap(true) {
				r.log.Warn("cryptfs: the cipher file system does not support fallocate; a full disk can now cut a cipher block and make it unreadable", "cipher_dir", r.cipherDir)
			}
			return 0
		}
		return errno(err)
	}
	return 0
}

// writeRange encrypts and writes data at plaintext offset off of a file
// whose plaintext size is size, merging the old content of partially
// covered first and last blocks. Everything between the old end of file
// and off must lie within the first block (writeLocked pads otherwise).
func (n *node) writeRange(fh *fileHandle, id []byte, data []byte, off, size uint64) syscall.Errno {
	end := off + uint64(len(data))
	first, last := off/bs, (end-1)/bs
	nb := int(last - first + 1)
	start := first * bs
	// The new content of blocks first..last runs to the end of the write
	// or, if the file is longer, to the old end within the last block.
	newEnd := max(end, min(size, (last+1)*bs))
	pp, pbuf := getBuf(&plainPool, nb*bs)
	defer putBuf(&plainPool, pp)
	buf := pbuf[:newEnd-start]

	skip := off - start
	if skip > 0 || (first == last && newEnd > end) {
		k, e := n.readOldBlock(fh.fd, id, first, buf[:0:bs])
		if e != 0 {
			return e
		}
		if uint64(k) < skip {
			clear(buf[k:skip])
		}
	}
	if last != first && newEnd > end {
		if _, e := n.readOldBlock(fh.fd, id, last, buf[(last-first)*bs:(last-first)*bs:(last-first+1)*bs]); e != 0 {
			return e
		}
	}
	copy(buf[skip:], data)

	cp, cbuf := getBuf(&cipherPool, nb*cbs)
	defer putBuf(&cipherPool, cp)
	ct := n.r.ce.EncryptBlocks(cbuf[:0], buf, first, id)
	if err := pwriteFull(fh.fd, ct, int64(contentenc.CipherOff(first))); err != nil {
		return errno(err)
	}
	return 0
}

// readOldBlock decrypts block blockNo into dst (appending within its
// capacity) and returns the plaintext length; a block past the end of
// file has length 0.
func (n *node) readOldBlock(fd int, id []byte, blockNo uint64, dst []byte) (int, syscall.Errno) {
	bp := blockPool.Get().(*[]byte)
	defer blockPool.Put(bp)
	ct := *bp
	k, err := preadFull(fd, ct, int64(contentenc.CipherOff(blockNo)))
	if err != nil {
		return 0, errno(err)
	}
	if k == 0 {
		return 0, 0
	}
	plain, err := n.r.ce.DecryptBlock(dst, ct[:k], blockNo, id)
	if err != nil {
		n.reportBlock(fd, id, err, blockNo)
		return 0, syscall.EIO
	}
	if len(plain) > 0 && &plain[0] != &dst[:1][0] {
		// DecryptBlock had to allocate (a hole); move it into place.
		copy(dst[:len(plain)], plain)
	}
	return len(plain), 0
}

// truncatePath truncates through fh, or if there is none by opening the
// cipher file cName in pfd.
func (n *node) truncatePath(fh *fileHandle, pfd int, cName string, size uint64) syscall.Errno {
	if fh == nil {
		if pfd < 0 {
			return syscall.ENOENT
		}
		fd, err := unix.Openat(pfd, cName, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return errno(err)
		}
		defer unix.Close(fd)
		fh = &fileHandle{fd: fd}
	}
	n.content.Lock()
	defer n.content.Unlock()
	return n.truncateLocked(fh, size)
}

// truncateLocked sets the plaintext size. The caller holds the content
// lock exclusively.
func (n *node) truncateLocked(fh *fileHandle, newSize uint64) syscall.Errno {
	oldSize, cipherSize, e := n.plainSizeOf(fh)
	if e != 0 {
		return e
	}
	if newSize == 0 {
		if err := unix.Ftruncate(fh.fd, 0); err != nil {
			return errno(err)
		}
		n.hdrGen++
		return 0
	}
	if newSize == oldSize && cipherSize == contentenc.CipherSize(oldSize) {
		return 0
	}
	if e := n.r.reserve(fh.fd, truncateSpans(oldSize, cipherSize, newSize)...); e != 0 {
		return e
	}
	id, _, e := fh.fileID(n, true)
	if e != 0 {
		return e
	}
	if newSize > oldSize {
		if rest := oldSize % bs; rest != 0 {
			blockEnd := oldSize - rest + bs
			if newSize <= blockEnd {
				return n.writeRange(fh, id, zeroBlock[:newSize-oldSize], oldSize, oldSize)
			}
			if e := n.writeRange(fh, id, zeroBlock[:bs-rest], oldSize, oldSize); e != 0 {
				return e
			}
		}
		if newSize%bs == 0 {
			return errno(unix.Ftruncate(fh.fd, int64(contentenc.CipherSize(newSize))))
		}
		// Whole blocks up to the new last one are holes; the partial
		// last block must be a real encrypted block.
		last := newSize / bs
		if err := unix.Ftruncate(fh.fd, int64(contentenc.CipherOff(last))); err != nil {
			return errno(err)
		}
		return n.writeRange(fh, id, zeroBlock[:newSize%bs], last*bs, last*bs)
	}
	// Shrink.
	if newSize%bs == 0 {
		return errno(unix.Ftruncate(fh.fd, int64(contentenc.CipherSize(newSize))))
	}
	last := newSize / bs
	var pb [bs]byte
	k, e := n.readOldBlock(fh.fd, id, last, pb[:0])
	if e != 0 {
		return e
	}
	keep := int(newSize % bs)
	if k < keep {
		clear(pb[k:keep])
	}
	var cb [cbs]byte
	ct := n.r.ce.EncryptBlock(cb[:0], pb[:keep], last, id)
	if err := pwriteFull(fh.fd, ct, int64(contentenc.CipherOff(last))); err != nil {
		return errno(err)
	}
	return errno(unix.Ftruncate(fh.fd, int64(contentenc.CipherOff(last))+int64(len(ct))))
}

// truncateSpans returns, in file order, the cipher ranges a truncation
// from oldSize (cipher size cipherSize) to newSize writes: a new header,
// the old partial last block grown (to a full block, or to newSize when
// that lies within it), and a new partial last block. The whole blocks
// between are holes and are not written.
func truncateSpans(oldSize, cipherSize, newSize uint64) []span {
	var header, grown, last span
	if cipherSize == 0 {
		header = span{0, contentenc.HeaderLen}
	}
	if newSize <= oldSize {
		// Shrink: the new last block is rewritten shorter.
		if newSize%bs != 0 {
			last = span{contentenc.CipherOff(newSize / bs), contentenc.CipherSize(newSize)}
		}
		return []span{header, last}
	}
	if rest := oldSize % bs; rest != 0 {
		pb := oldSize / bs
		grown = span{contentenc.CipherOff(pb), contentenc.CipherSize(min(newSize, (pb+1)*bs))}
		if newSize <= (pb+1)*bs {
			return []span{header, grown}
		}
	}
	if newSize%bs != 0 {
		last = span{contentenc.CipherOff(newSize / bs), contentenc.CipherSize(newSize)}
	}
	return []span{header, grown, last}
}

// Allocate implements fs.NodeAllocater for mode 0 and
// FALLOC_FL_KEEP_SIZE: the cipher blocks covering the range are allocated
// (reading as holes), and without KEEP_SIZE the file grows to cover the
// range. Punching holes and other modes are not supported.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	fh, ok := f.(*fileHandle)
	if !ok {
		return syscall.EBADF
	}
	if n.r.ro {
		return syscall.EROFS
	}
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	if size == 0 {
		return syscall.EINVAL
	}
	n.content.Lock()
	defer n.content.Unlock()
	oldSize, cipherSize, e := n.plainSizeOf(fh)
	if e != 0 {
		return e
	}
	// The cipher bytes that plaintext [off, off+size) occupies: from its
	// first block (or the header of an empty file) to the end of its last
	// byte. Holes in the range are allocated too, as on a plain file
	// system; they keep reading as zeros, so they stay holes in the
	// plaintext view.
	start := contentenc.CipherOff(off / bs)
	if cipherSize == 0 {
		start = 0
	}
	if err := unix.Fallocate(fh.fd, unix.FALLOC_FL_KEEP_SIZE, int64(start), int64(contentenc.CipherSize(off+size)-start)); err != nil {
		return errno(err)
	}
	if mode&unix.FALLOC_FL_KEEP_SIZE == 0 && off+size > oldSize {
		return n.truncateLocked(fh, off+size)
	}
	return 0
}

// fsyncFdatasync is FUSE_FSYNC_FDATASYNC in fsync_flags.
const fsyncFdatasync = 1

// Fsync implements fs.NodeFsyncer.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	fh, ok := f.(*fileHandle)
	if !ok {
		return 0
	}
	// The file's name may need metadata files of its directory.
	if _, p := n.Parent(); p != nil {
		if pn, ok := p.Operations().(*node); ok {
			if e := pn.syncMeta(); e != 0 {
				return e
			}
		}
	}
	if flags&fsyncFdatasync != 0 {
		return errno(unix.Fdatasync(fh.fd))
	}
	return errno(unix.Fsync(fh.fd))
}

// Flush implements fs.NodeFlusher. Every write already reached the cipher
// file, so there is nothing to do.
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return 0 }

// Release implements fs.NodeReleaser.
func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if fh, ok := f.(*fileHandle); ok {
		unix.Close(fh.fd)
		fh.fd = -1
	}
	return 0
}
