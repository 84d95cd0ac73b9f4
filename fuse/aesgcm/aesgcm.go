package aesgcm

import (
	"crypto/fips140"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"kmsagent/agent/secret"
)

const (
	// KeySize is the AES-256 key length.
	KeySize = 32
	// NonceSize is the nonce length (gocryptfs's GCMIV128).
	NonceSize = 16
	// TagSize is the authentication tag length.
	TagSize = 16

	roundKeysLen = 15 * 16
	hashTableLen = 16 * 16
	// maxPlain is GCM's limit on one message: 2^32 - 2 blocks.
	maxPlain = (1<<32 - 2) * 16
)

// ErrUnsupported means this CPU (or build) cannot run the assembly.
var ErrUnsupported = errors.New("aesgcm: CPU lacks VAES, VPCLMULQDQ or AVX-512")

// errOpen is what a failed authentication returns, as crypto/cipher's.
var errOpen = errors.New("aesgcm: message authentication failed")

// Supported reports whether New can work here.
func Supported() bool { return haveAsm && !fips140.Enabled() }

// AEAD is AES-256-GCM with 16-byte nonces and tags. It implements
// cipher.AEAD and is safe for concurrent use until Wipe.
type AEAD struct {
	// mem holds the round keys, then the hash key powers; locked and
	// excluded from core dumps.
	mem *secret.Key
	rk  *[roundKeysLen]byte
	ht  *[hashTableLen]byte
}

// New expands the 32-byte key into locked memory. The caller keeps
// ownership of key. In FIPS 140 mode it refuses (ErrUnsupported), so
// that the module's own GCM is used.
func New(key []byte) (*AEAD, error) {
	if !Supported() {
		return nil, ErrUnsupported
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("aesgcm: key is %d bytes, want %d", len(key), KeySize)
	}
	mem, err := secret.New(roundKeysLen + hashTableLen)
	if err != nil {
		return nil, fmt.Errorf("aesgcm: %w", err)
	}
	b := mem.Bytes()
	g := &AEAD{
		mem: mem,
		rk:  (*[roundKeysLen]byte)(b[:roundKeysLen]),
		ht:  (*[hashTableLen]byte)(b[roundKeysLen:]),
	}
	expandKey((*[KeySize]byte)(key), g.rk)
	initKey(g.rk, g.ht)
	return g, nil
}

// NonceSize implements cipher.AEAD.
func (g *AEAD) NonceSize() int { return NonceSize }

// Overhead implements cipher.AEAD.
func (g *AEAD) Overhead() int { return TagSize }

// Wipe zeroes and unmaps the key material. The AEAD must no longer be in
// use: a Seal or Open running at the same time could fault.
func (g *AEAD) Wipe() {
	if g == nil {
		return
	}
	g.rk, g.ht = nil, nil
	g.mem.Wipe()
}

// Seal implements cipher.AEAD: it appends the ciphertext and tag of
// plaintext to dst. dst's spare capacity may hold plaintext exactly
// (in-place) but must not overlap it otherwise.
func (g *AEAD) Seal(dst, nonce, plaintext, ad []byte) []byte {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > maxPlain {
		panic("aesgcm: message too large for GCM")
	}
	if g.rk == nil {
		panic("aesgcm: use after Wipe")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+TagSize)
	if inexactOverlap(out, plaintext) {
		panic("aesgcm: invalid buffer overlap of output and input")
	}
	var j0, mask [16]byte
	g.firstCounter(&j0, nonce)
	ctrBlocks(g.rk, &j0, &mask[0], &zeroBlock[0], 1)
	ct := out[:len(plaintext)]
	g.counterMode(&j0, ct, plaintext)
	g.tag((*[TagSize]byte)(out[len(plaintext):]), &mask, ad, ct)
	return ret
}

// Open implements cipher.AEAD: it checks the tag at the end of
// ciphertext and appends the plaintext to dst. Nothing is written unless
// the tag is right.
//
// Beyond cipher.AEAD's rule (dst's spare capacity may hold ciphertext
// exactly), the plaintext may also start below the ciphertext in the same
// memory: the data is read before the bytes under it are written, as in
// a forward memmove. fuse/contentenc uses this to decrypt a run of blocks
// into the front of the buffer that holds them.
func (g *AEAD) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if g.rk == nil {
		panic("aesgcm: use after Wipe")
	}
	if len(ciphertext) < TagSize || uint64(len(ciphertext)) > maxPlain+TagSize {
		return nil, errOpen
	}
	ct := ciphertext[:len(ciphertext)-TagSize]
	var j0, mask, want [16]byte
	g.firstCounter(&j0, nonce)
	ctrBlocks(g.rk, &j0, &mask[0], &zeroBlock[0], 1)
	g.tag(&want, &mask, ad, ct)
	if subtle.ConstantTimeCompare(want[:], ciphertext[len(ct):]) != 1 {
		return nil, errOpen
	}
	ret, out := sliceForAppend(dst, len(ct))
	if inexactOverlap(out, ct) && !below(out, ct) {
		panic("aesgcm: invalid buffer overlap of output and input")
	}
	g.counterMode(&j0, out, ct)
	return ret, nil
}

var zeroBlock [16]byte

// firstCounter sets j0 to GHASH(nonce ‖ 0^64 ‖ [128]_64), the first
// counter block for a 16-byte nonce.
func (g *AEAD) firstCounter(j0 *[16]byte, nonce []byte) {
	var in [32]byte
	copy(in[:16], nonce)
	binary.BigEndian.PutUint64(in[24:], NonceSize*8)
	var y [16]byte
	ghashBlocks(g.ht, &y, &in[0], 2)
	reverse(j0, &y)
}

// counterMode XORs src with the key stream of the counter blocks after
// j0 into dst (same length).
func (g *AEAD) counterMode(j0 *[16]byte, dst, src []byte) {
	ctr := *j0
	inc32(&ctr, 1)
	full := len(src) / 16
	if full > 0 {
		ctrBlocks(g.rk, &ctr, &dst[0], &src[0], full)
	}
	if rest := len(src) % 16; rest > 0 {
		inc32(&ctr, uint32(full))
		var ks [16]byte
		ctrBlocks(g.rk, &ctr, &ks[0], &zeroBlock[0], 1)
		// By hand: XORBytes refuses the overlap Open allows.
		for i := range rest {
			dst[full*16+i] = src[full*16+i] ^ ks[i]
		}
	}
}

// tag computes GHASH(ad, ct) XOR mask into t.
func (g *AEAD) tag(t, mask *[16]byte, ad, ct []byte) {
	var y [16]byte
	g.hash(&y, ad)
	g.hash(&y, ct)
	var lens [16]byte
	binary.BigEndian.PutUint64(lens[:8], uint64(len(ad))*8)
	binary.BigEndian.PutUint64(lens[8:], uint64(len(ct))*8)
	ghashBlocks(g.ht, &y, &lens[0], 1)
	reverse(t, &y)
	subtle.XORBytes(t[:], t[:], mask[:])
}

// hash adds data, zero-padded to whole blocks, to the GHASH state y.
func (g *AEAD) hash(y *[16]byte, data []byte) {
	full := len(data) / 16
	if full > 0 {
		ghashBlocks(g.ht, y, &data[0], full)
	}
	if rest := len(data) % 16; rest > 0 {
		var last [16]byte
		copy(last[:], data[full*16:])
		ghashBlocks(g.ht, y, &last[0], 1)
	}
}

// inc32 adds n to the last four bytes of the counter block, modulo 2^32.
func inc32(ctr *[16]byte, n uint32) {
	binary.BigEndian.PutUint32(ctr[12:], binary.BigEndian.Uint32(ctr[12:])+n)
}

// reverse stores the GHASH state (kept byte-reversed) in GCM's order.
func reverse(dst, y *[16]byte) {
	for i := range 16 {
		dst[i] = y[15-i]
	}
}

// below reports whether x starts before y (both non-empty).
func below(x, y []byte) bool {
	return uintptr(unsafe.Pointer(&x[0])) < uintptr(unsafe.Pointer(&y[0]))
}

// sliceForAppend extends in by n bytes, reusing its capacity when it
// suffices, and returns the whole slice and the n new bytes.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}

// inexactOverlap reports whether x and y share memory at different
// offsets; in-place use (the same start) is allowed.
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	xs := uintptr(unsafe.Pointer(&x[0]))
	ys := uintptr(unsafe.Pointer(&y[0]))
	return xs < ys+uintptr(len(y)) && ys < xs+uintptr(len(x))
}
