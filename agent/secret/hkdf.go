package secret

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
)

// HKDF derives n bytes from ikm with HKDF-SHA256 (RFC 5869), an empty
// salt and info, into a new Key.
//
// crypto/hkdf gives the same bytes but leaves ikm behind on the heap: the
// extract step hashes ikm as HMAC data, and SHA-256 keeps a trailing
// partial block in its buffer, where it stays after the hash is garbage.
// Here the extract step pads the inner block itself, so the hash only
// ever reads ikm from ikm's own buffer. The expand step keys HMAC with
// the pseudorandom key, which HMAC stores XORed with its pads, and the
// output is moved into a Key at once.
func HKDF(ikm *Key, info string, n int) (*Key, error) {
	prk, err := extractSHA256(ikm.Bytes())
	if err != nil {
		return nil, err
	}
	defer prk.Wipe()
	out, err := hkdf.Expand(sha256.New, prk.Bytes(), info, n)
	if err != nil {
		return nil, fmt.Errorf("hkdf expand: %w", err)
	}
	return FromBytes(out)
}

const sha256Block = 64

// extractSHA256 is HMAC-SHA256(key = 32 zero bytes, data = ikm) for ikm of
// at most 55 bytes, so that ikm and the SHA-256 padding fill exactly the
// second block of the inner hash.
func extractSHA256(ikm []byte) (*Key, error) {
	if len(ikm) == 0 || len(ikm) > sha256Block-9 {
		return nil, fmt.Errorf("hkdf extract: input key of %d bytes, want 1 to %d", len(ikm), sha256Block-9)
	}
	var ipad, opad [sha256Block]byte
	for i := range ipad {
		ipad[i], opad[i] = 0x36, 0x5c // an all-zero HMAC key XORed with the pads
	}
	blk, err := New(sha256Block)
	if err != nil {
		return nil, err
	}
	defer blk.Wipe()
	b := blk.Bytes()
	copy(b, ikm)
	b[len(ikm)] = 0x80
	binary.BigEndian.PutUint64(b[sha256Block-8:], uint64(sha256Block+len(ikm))*8)

	inner := sha256.New()
	inner.Write(ipad[:])
	inner.Write(b) // a whole block: hashed from b, not copied
	state, err := inner.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("hkdf extract: %w", err)
	}
	defer Zero(state)
	// The marshalled state is a 4-byte magic, then the eight state words:
	// after the padded final block they are the inner digest.
	const magic = "sha\x03"
	if len(state) < len(magic)+sha256.Size || string(state[:len(magic)]) != magic {
		return nil, errors.New("hkdf extract: unexpected SHA-256 state encoding")
	}
	outer := sha256.New()
	outer.Write(opad[:])
	outer.Write(state[len(magic) : len(magic)+sha256.Size])
	sum := outer.Sum(nil)
	return FromBytes(sum)
}
