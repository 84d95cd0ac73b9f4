package contentenc

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"kmsagent/fuse/aesgcm"
)

// ErrAuth reports a block whose tag does not verify: wrong key, tampering,
// or a block moved to another position or file.
var ErrAuth = errors.New("contentenc: message authentication failed")

// ErrBlock reports a block that is malformed before authentication is even
// tried: bad length, all-zero nonce, bad file ID length.
var ErrBlock = errors.New("contentenc: malformed block")

// BlockError says which block of a file failed. It wraps ErrAuth or
// ErrBlock.
type BlockError struct {
	BlockNo uint64
	Err     error
}

func (e *BlockError) Error() string { return fmt.Sprintf("block %d: %v", e.BlockNo, e.Err) }
func (e *BlockError) Unwrap() error { return e.Err }

// parallelMin is the input size in blocks from which EncryptBlocks
// spreads work over several goroutines. Below it, the cost of
// starting and joining goroutines outweighs the gain (one block takes on
// the order of a microsecond with AES-NI).
const parallelMin = 32

// ContentEnc seals and opens file blocks. It is safe for concurrent use.
type ContentEnc struct {
	aead cipher.AEAD
	// opensDown: aead may write a block's plaintext below its ciphertext
	// in the same buffer (see DecryptBlocks).
	opensDown bool
}

// New wraps the content AEAD from cryptocore. It must use 16-byte nonces
// and 16-byte tags; anything else would not be the gocryptfs format, so
// New panics on it as a programming error.
func New(aead cipher.AEAD) *ContentEnc {
	if aead.NonceSize() != IVLen || aead.Overhead() != TagLen {
		panic(fmt.Sprintf("contentenc: AEAD has nonce %d / tag %d bytes, want %d / %d",
			aead.NonceSize(), aead.Overhead(), IVLen, TagLen))
	}
	_, down := aead.(*aesgcm.AEAD)
	return &ContentEnc{aead: aead, opensDown: down}
}

// scratch holds a block's nonce and additional data. They are handed to
// the AEAD through an interface and so escape to the heap; the multi-block
// paths reuse one scratch per goroutine instead of allocating per block.
type scratch struct {
	nonce [IVLen]byte
	ad    [8 + FileIDLen]byte
}

func checkFileID(fileID []byte) error {
	if fileID != nil && len(fileID) != FileIDLen {
		return fmt.Errorf("%w: file ID is %d bytes, want %d or none", ErrBlock, len(fileID), FileIDLen)
	}
	return nil
}

// additionalData is what each block is bound to: its number (big endian)
// and, for file contents, the file ID. Symlinks and xattrs have no file ID.
func (s *scratch) additionalData(blockNo uint64, fileID []byte) []byte {
	binary.BigEndian.PutUint64(s.ad[:8], blockNo)
	return s.ad[:8+copy(s.ad[8:], fileID)]
}

// EncryptBlock appends nonce ‖ ciphertext ‖ tag for one block of at most
// DefaultBS plaintext bytes to dst, using a fresh random nonce. An empty
// block encrypts to nothing, as gocryptfs never stores empty blocks.
//
// dst's spare capacity must not overlap plain. A block longer than
// DefaultBS or a file ID that is neither nil nor 16 bytes is a caller bug that would write an unreadable file, so it panics.
func (c *ContentEnc) EncryptBlock(dst, plain []byte, blockNo uint64, fileID []byte) []byte {
	if len(plain) > DefaultBS {
		panic(fmt.Sprintf("contentenc: block of %d bytes exceeds %d", len(plain), DefaultBS))
	}
	if err := checkFileID(fileID); err != nil {
		panic(err.Error())
	}
	return c.seal(dst, plain, blockNo, fileID, new(scratch))
}

// seal is EncryptBlock without the block size limit, for symlink targets
// and xattr values, which gocryptfs seals as one block of any length.
// The file ID must have been checked.
func (c *ContentEnc) seal(dst, plain []byte, blockNo uint64, fileID []byte, s *scratch) []byte {
	if len(plain) == 0 {
		return dst
	}
	// crypto/rand.Read does not fail on Linux since Go 1.24; it aborts the
	// program instead of returning a short read.
	_, _ = rand.Read(s.nonce[:])
	dst = append(dst, s.nonce[:]...)
	return c.aead.Seal(dst, s.nonce[:], plain, s.additionalData(blockNo, fileID))
}

// EncryptBlocks encrypts consecutive plaintext blocks starting at block
// firstBlockNo and appends the cipher blocks to dst. Every block but the
// last must be full (plain is split every DefaultBS bytes), and dst's
// spare capacity must not overlap plain. Large inputs are encrypted on all
// cores.
func (c *ContentEnc) EncryptBlocks(dst, plain []byte, firstBlockNo uint64, fileID []byte) []byte {
	if len(plain) == 0 {
		return dst
	}
	if err := checkFileID(fileID); err != nil {
		panic(err.Error())
	}
	n := (len(plain) + DefaultBS - 1) / DefaultBS
	start := len(dst)
	outLen := len(plain) + n*Overhead
	dst = grow(dst, outLen)
	out := dst[start : start+outLen]

	// Block i reads plain[i*DefaultBS:] and writes out[i*CipherBS:], so
	// workers own disjoint ranges and need no locking.
	encRange := func(lo, hi int) {
		s := new(scratch)
		for i := lo; i < hi; i++ {
			p := plain[i*DefaultBS : min((i+1)*DefaultBS, len(plain))]
			o := out[i*CipherBS : i*CipherBS : i*CipherBS+len(p)+Overhead]
			c.seal(o, p, firstBlockNo+uint64(i), fileID, s)
		}
	}
	forEachRange(n, encRange)
	return dst
}

// DecryptBlock verifies and decrypts one cipher block and appends the
// plaintext to dst. A full-size block of zero bytes is a hole and yields
// DefaultBS zeros, as in gocryptfs; an empty block yields nothing. Errors
// are *BlockError wrapping ErrAuth (tag mismatch) or ErrBlock (malformed).
// dst must not overlap ciphertext.
func (c *ContentEnc) DecryptBlock(dst, ciphertext []byte, blockNo uint64, fileID []byte) ([]byte, error) {
	return c.open(dst, ciphertext, blockNo, fileID, DefaultBS, new(scratch))
}

// open verifies and decrypts one block of up to maxPlain bytes.
func (c *ContentEnc) open(dst, ct []byte, blockNo uint64, fileID []byte, maxPlain int, s *scratch) ([]byte, error) {
	if len(ct) == 0 {
		return dst, nil
	}
	fail := func(err error, format string, args ...any) ([]byte, error) {
		if format != "" {
			err = fmt.Errorf("%w: "+format, append([]any{err}, args...)...)
		}
		return dst, &BlockError{BlockNo: blockNo, Err: err}
	}
	if len(ct) <= Overhead {
		return fail(ErrBlock, "%d bytes is too short, need more than %d", len(ct), Overhead)
	}
	if len(ct)-Overhead > maxPlain {
		return fail(ErrBlock, "%d bytes is too long, at most %d", len(ct), maxPlain+Overhead)
	}
	nonce := ct[:IVLen]
	if isZero(nonce) {
		// Real nonces are random, so a zero nonce means zeroed data: a
		// hole if the whole block is zero, otherwise damage (gocryptfs
		// saw this from a tmpfs bug).
		if len(ct) == CipherBS && isZero(ct) {
			return append(dst, make([]byte, DefaultBS)...), nil
		}
		return fail(ErrBlock, "all-zero nonce")
	}
	if err := checkFileID(fileID); err != nil {
		return fail(err, "")
	}
	out, err := c.aead.Open(dst, nonce, ct[IVLen:], s.additionalData(blockNo, fileID))
	if err != nil {
		return fail(ErrAuth, "")
	}
	return out, nil
}

// DecryptBlocks decrypts consecutive cipher blocks starting at block
// firstBlockNo in place: block i's plaintext is written over the front of
// ciphertext at i*DefaultBS, at or below where its own ciphertext starts
// (i*CipherBS+IVLen), so every block is read before anything is written
// over it. Every block but the last must be full size. It returns the
// plaintext, a prefix of ciphertext. On failure the error is a
// *BlockError naming the first bad block, the returned slice holds the
// plaintext of the blocks before it, and the bytes after that are
// undefined.
//
// In place because a read decrypts each request's blocks where it read
// them and sends them from there: the data stays in the cache between the
// read, the decryption and the reply, and no second buffer is written
// (15 % more throughput in a cold sequential read on a share). It runs on
// one goroutine, since a range decrypted in parallel would write its first
// block over the previous range's last ciphertext.
func (c *ContentEnc) DecryptBlocks(ciphertext []byte, firstBlockNo uint64, fileID []byte) ([]byte, error) {
	n := (len(ciphertext) + CipherBS - 1) / CipherBS
	if n > 0 {
		if lastLen := len(ciphertext) - (n-1)*CipherBS; lastLen <= Overhead {
			return ciphertext[:0], &BlockError{BlockNo: firstBlockNo + uint64(n-1),
				Err: fmt.Errorf("%w: %d bytes is too short, need more than %d", ErrBlock, lastLen, Overhead)}
		}
	}
	s := new(scratch)
	done := 0
	for i := range n {
		ct := ciphertext[i*CipherBS : min((i+1)*CipherBS, len(ciphertext))]
		// aesgcm opens below the ciphertext directly; crypto/cipher only
		// in place, so its plaintext is then moved down.
		dst := ciphertext[done:done]
		if !c.opensDown {
			dst = ct[IVLen:IVLen]
		}
		out, err := c.open(dst, ct, firstBlockNo+uint64(i), fileID, DefaultBS, s)
		if err != nil {
			return ciphertext[:done], err
		}
		if c.opensDown {
			done += len(out)
		} else {
			done += copy(ciphertext[done:], out)
		}
	}
	return ciphertext[:done], nil
}

// forEachRange runs fn over [0, n) split into contiguous ranges, one per
// core when n is large enough to pay for the goroutines.
func forEachRange(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/parallelMin)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { fn(w*n/workers, (w+1)*n/workers) })
	}
	wg.Wait()
}

// grow extends dst by n bytes, reallocating at most once.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		nd := make([]byte, len(dst), len(dst)+n)
		copy(nd, dst)
		dst = nd
	}
	return dst[:len(dst)+n]
}
