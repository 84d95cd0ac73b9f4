// Package cryptocore turns a share's master key into the two ciphers the
// gocryptfs v2 on-disk format needs: AES-256-GCM with 128-bit nonces for
// file contents and a raw AES-256 block cipher that EME uses for names.
//
// Both keys are derived with HKDF-SHA256 (feature flag HKDF), so the master
// key itself never keys a cipher and content and name keys are independent.
package cryptocore

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"

	"kmsagent/agent/secret"
	"kmsagent/fuse/aesgcm"
)

const (
	// KeyLen is the master key length and the length of each derived key
	// (AES-256).
	KeyLen = 32
	// NonceLen is the GCM nonce length (feature flag GCMIV128). Go's
	// default of 12 bytes would not read gocryptfs files.
	NonceLen = 16
	// TagLen is the GCM authentication tag length.
	TagLen = 16
)

// HKDF "info" strings. They are part of the on-disk format: changing a
// single byte derives different keys and makes every existing share
// unreadable.
const (
	infoContent = "AES-GCM file content encryption"
	infoNames   = "EME filename encryption"
)

// ErrKey reports an unusable master key.
var ErrKey = errors.New("cryptocore: unusable master key")

// CryptoCore holds the ciphers derived from one master key. It is safe for
// concurrent use until Wipe is called.
type CryptoCore struct {
	aead  cipher.AEAD
	block cipher.Block
}

// New derives the content and name keys from a 32-byte master key with
// HKDF-SHA256 (no salt) and builds AES-256-GCM with 16-byte nonces and the
// AES-256 block for EME, exactly as gocryptfs v2 does. The master key stays
// owned by the caller; New neither keeps nor wipes it.
func New(master *secret.Key) (*CryptoCore, error) {
	mk := master.Bytes()
	if len(mk) != KeyLen {
		return nil, fmt.Errorf("%w: length %d, want %d", ErrKey, len(mk), KeyLen)
	}
	if isZero(mk) {
		// An all-zero key is almost certainly an unfilled buffer; refusing
		// it beats silently creating a share anyone can read.
		return nil, fmt.Errorf("%w: all-zero", ErrKey)
	}

	contentKey, err := derive(master, infoContent)
	if err != nil {
		return nil, err
	}
	defer contentKey.Wipe()
	nameKey, err := derive(master, infoNames)
	if err != nil {
		return nil, err
	}
	defer nameKey.Wipe()

	// Both AEADs copy the key into their expanded key schedules, so the
	// derived key buffers are wiped as soon as the ciphers exist.
	aead, err := contentAEAD(contentKey)
	if err != nil {
		return nil, err
	}
	nameBlock, err := aes.NewCipher(nameKey.Bytes())
	if err != nil {
		return nil, fmt.Errorf("cryptocore: name cipher: %w", err)
	}
	return &CryptoCore{aead: aead, block: nameBlock}, nil
}

// contentAEAD builds AES-256-GCM with 16-byte nonces: fuse/aesgcm where
// the CPU has VAES (about twice as fast, key schedule in locked memory),
// crypto/cipher elsewhere. Both write the same bytes.
func contentAEAD(key *secret.Key) (cipher.AEAD, error) {
	if aesgcm.Supported() {
		aead, err := aesgcm.New(key.Bytes())
		if err != nil {
			return nil, fmt.Errorf("cryptocore: content GCM: %w", err)
		}
		return aead, nil
	}
	block, err := aes.NewCipher(key.Bytes())
	if err != nil {
		return nil, fmt.Errorf("cryptocore: content cipher: %w", err)
	}
	aead, err := cipher.NewGCMWithNonceSize(block, NonceLen)
	if err != nil {
		return nil, fmt.Errorf("cryptocore: content GCM: %w", err)
	}
	return aead, nil
}

// derive runs HKDF-SHA256 with an empty salt and moves the result into
// locked memory, zeroing the heap copy the standard library returns. The
// HMAC state inside crypto/hkdf is garbage we cannot reach to clear.
func derive(master *secret.Key, info string) (*secret.Key, error) {
	// secret.HKDF, unlike crypto/hkdf, leaves no copy of the master key
	// in the hash state it drops on the heap.
	k, err := secret.HKDF(master, info, KeyLen)
	if err != nil {
		return nil, fmt.Errorf("cryptocore: derive %q key: %w", info, err)
	}
	return k, nil
}

// ContentAEAD returns AES-256-GCM with 16-byte nonces and 16-byte tags for
// file contents, symlink targets and xattr values. It is nil after Wipe.
func (c *CryptoCore) ContentAEAD() cipher.AEAD { return c.aead }

// NameBlock returns the AES-256 block cipher EME uses for file and xattr
// names. It is nil after Wipe.
func (c *CryptoCore) NameBlock() cipher.Block { return c.block }

// Wipe drops this CryptoCore's references to its ciphers so that later use
// fails loudly (nil cipher) instead of silently working, and zeroes the
// content cipher's key schedule where it is fuse/aesgcm's. Nothing may
// still be using the ciphers.
//
// What it cannot do: the derived key bytes were already zeroed in New, but
// Go's crypto/aes (the name cipher, and the content cipher on CPUs without
// VAES) and crypto/cipher keep the expanded AES key schedules (and the GCM
// hash key H) in their own heap objects with no way to clear them, and crypto/hkdf left HMAC state derived from the master key as
// unreferenced heap garbage. That memory lives until the garbage collector reuses it, so the
// only reliable way to remove it is to end the process, which is why each
// FUSE mount runs in its own worker that exits on unmount.
func (c *CryptoCore) Wipe() {
	if c == nil {
		return
	}
	if a, ok := c.aead.(*aesgcm.AEAD); ok {
		a.Wipe()
	}
	c.aead = nil
	c.block = nil
}

func isZero(b []byte) bool {
	var v byte
	for _, x := range b {
		v |= x
	}
	return v == 0
}
