package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// chunkSize is the unit of work: one worker reads a chunk, encrypts it
// in place and writes it while it is still in that core's cache. Larger
// chunks leave the cache between the steps; smaller ones cost more
// system calls (see bench.sh).
const chunkSize = 1 << 20

// transfer is one pass of a payload through the cipher: srcLen bytes of
// the source, chunk by chunk, encrypted or decrypted in place and written
// to the destination at the same offset (plus dstOff). It is the core of
// encrypt and decrypt and knows nothing of headers, so that a caller that
// places an image inside a larger one (a partition of a disk image) uses
// it as it is.
//
// Each of GOMAXPROCS workers runs read, crypt and write on its own
// buffer; with a positional source and destination they need no
// coordination but the next chunk number. A stream source is read in
// order under a lock, and a stream destination written in order, each
// worker waiting for its turn.
type transfer struct {
	sc      *sectorCrypt
	decrypt bool

	// The source: src, a stream read in order to its end (srcLen -1)
	// or to srcLen bytes; or srcAt, srcLen bytes from srcOff.
	src    io.Reader
	srcAt  io.ReaderAt
	srcOff int64
	srcLen int64
	// holes are ranges of srcAt (relative to srcOff) that read as zeros:
	// a chunk inside one is cleared instead of read.
	holes []span

	// The destination: dst, a stream written in order; or dstAt at
	// dstOff. Each chunk goes out as whole sectors (the last one padded
	// with zeros), cut at dstLen bytes when dstLen >= 0.
	dst    io.Writer
	dstAt  io.WriterAt
	dstOff int64
	dstLen int64
	// sparse says dstAt is a new file that reads as zeros where nothing
	// was written, so all-zero output chunks are left as holes.
	sparse bool

	progress func(done int64) // called with the source bytes done so far

	readMu  sync.Mutex // stream source: one reader at a time, in order
	eof     bool       // stream source: it ended
	next    int64      // the next chunk to read
	writeMu sync.Mutex // stream destination: chunks in order
	turn    *sync.Cond
	written int64 // stream destination: chunks written
	failed  bool  // stream destination: stop waiting for a turn
	done    atomic.Int64
	progMu  sync.Mutex
}

// span is a byte range [off, off+len).
type span struct{ off, len int64 }

// run moves the payload and returns the number of source bytes read.
func (t *transfer) run(parent context.Context) (int64, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	t.turn = sync.NewCond(&t.writeMu)
	stop := context.AfterFunc(ctx, func() {
		t.writeMu.Lock()
		t.failed = true
		t.turn.Broadcast()
		t.writeMu.Unlock()
	})
	defer stop()
	workers := runtime.GOMAXPROCS(0)
	if t.srcAt != nil {
		workers = max(1, min(workers, int((t.srcLen+chunkSize-1)/chunkSize)))
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := t.work(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return t.done.Load(), nil
}

// work is one worker: chunks until the source ends or something fails.
func (t *transfer) work(ctx context.Context) error {
	buf := make([]byte, chunkSize)
	if t.decrypt {
		defer clear(buf) // plaintext does not linger in the heap
	}
	ss := t.sc.sectorSize
	for ctx.Err() == nil {
		k, n, err := t.read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		off := k * chunkSize
		padded := (n + ss - 1) / ss * ss
		clear(buf[n:padded])
		t.sc.crypt(buf[:padded], uint64(off)/uint64(ss), t.decrypt)
		w := int64(padded)
		if t.dstLen >= 0 {
			w = max(0, min(w, t.dstLen-off))
		}
		if err := t.write(k, buf[:w]); err != nil {
			return err
		}
		t.done.Add(int64(n))
		if t.progress != nil {
			t.progMu.Lock()
			t.progress(t.done.Load())
			t.progMu.Unlock()
		}
	}
	return nil
}

// read fills buf with the next chunk and returns its number and length;
// io.EOF when none is left.
func (t *transfer) read(buf []byte) (int64, int, error) {
	if t.src != nil {
		t.readMu.Lock()
		defer t.readMu.Unlock()
		if t.eof {
			return 0, 0, io.EOF
		}
		k := t.next
		t.next++
		n, err := io.ReadFull(t.src, buf)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.eof = true
			if n == 0 {
				return 0, 0, io.EOF
			}
			err = nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read input: %w", err)
		}
		return k, n, nil
	}
	t.readMu.Lock()
	k := t.next
	t.next++
	t.readMu.Unlock()
	off := k * chunkSize
	if off >= t.srcLen {
		return 0, 0, io.EOF
	}
	n := int(min(chunkSize, t.srcLen-off))
	if inHole(t.holes, off, int64(n)) {
		clear(buf[:n])
		return k, n, nil
	}
	got, err := t.srcAt.ReadAt(buf[:n], t.srcOff+off)
	if got == n {
		return k, n, nil // io.ReaderAt may say EOF with the last bytes
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("it ended at %d bytes instead of %d; it changed while being read", off+int64(got), t.srcLen)
	}
	return 0, 0, fmt.Errorf("read input: %w", err)
}

// write puts out chunk k.
func (t *transfer) write(k int64, b []byte) error {
	if t.dstAt != nil {
		if len(b) == 0 || t.sparse && allZero(b) {
			return nil
		}
		if _, err := t.dstAt.WriteAt(b, t.dstOff+k*chunkSize); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	for t.written != k && !t.failed {
		t.turn.Wait()
	}
	if t.failed {
		return nil // the cause is already recorded
	}
	if len(b) > 0 {
		if _, err := t.dst.Write(b); err != nil {
			t.failed = true
			t.turn.Broadcast()
			return fmt.Errorf("write output: %w", err)
		}
	}
	t.written++
	t.turn.Broadcast()
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 && b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] == 0 {
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// inHole reports whether [off, off+n) lies inside one of holes (sorted).
func inHole(holes []span, off, n int64) bool {
	for _, h := range holes {
		if h.off > off {
			return false
		}
		if off+n <= h.off+h.len {
			return true
		}
	}
	return false
}

// sourceHints returns the holes of [off, off+n) of r, relative to off,
// when r is a regular file that can tell them (SEEK_HOLE), and asks the
// kernel for read-ahead suited to one sequential pass.
func sourceHints(r io.ReaderAt, off, n int64) []span {
	if sr, ok := r.(*io.SectionReader); ok {
		// A part of a file (a partition of a disk image) has the
		// file's holes.
		outer, base, _ := sr.Outer()
		return sourceHints(outer, base+off, n)
	}
	f, ok := r.(*os.File)
	if !ok {
		return nil
	}
	fd := int(f.Fd())
	_ = unix.Fadvise(fd, off, n, unix.FADV_SEQUENTIAL) // only a hint
	// A file with blocks for all of its bytes has no hole worth a scan
	// (tmpfs walks every page to answer SEEK_HOLE).
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Blocks*512 >= st.Size {
		return nil
	}
	var holes []span
	// lseek moves the file offset; every read here is positional.
	for pos, end := off, off+n; pos < end; {
		hole, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil || hole >= end {
			break
		}
		data, err := unix.Seek(fd, hole, unix.SEEK_DATA)
		if err != nil { // ENXIO: a hole to the end of the file
			data = end
		}
		data = min(data, end)
		holes = append(holes, span{hole - off, data - hole})
		pos = data
	}
	return holes
}
