package luks2

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"

	"golang.org/x/crypto/argon2"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/luks2/internal/sha256block"
)

// KDF names as they appear in the header.
const (
	KDFPBKDF2   = "pbkdf2"
	KDFArgon2i  = "argon2i"
	KDFArgon2id = "argon2id"
)

// saltSize is the size of keyslot and digest salts (LUKS_SALTSIZE).
const saltSize = 32

// Limits cryptsetup puts on new keyslots (crypt_pbkdf_get_limits).
const (
	minPBKDF2Iterations = 1000
	minArgon2Time       = 4
	minArgon2Memory     = 32      // KiB
	maxArgon2Memory     = 4 << 20 // KiB, 4 GiB
	maxArgon2CPUs       = 4
)

// KDF is a keyslot's key derivation: PBKDF2 with Hash and Iterations, or
// Argon2i/Argon2id with Time, MemoryKiB and CPUs.
type KDF struct {
	Type       string
	Hash       string // pbkdf2: sha1, sha256 or sha512
	Iterations uint32 // pbkdf2
	Time       uint32 // argon2: passes
	MemoryKiB  uint32 // argon2
	CPUs       uint32 // argon2: lanes
}

// checkNew applies cryptsetup's minimums to a KDF for a new keyslot, so
// every keyslot we add is one cryptsetup will also accept and use.
func (k KDF) checkNew() error {
	switch k.Type {
	case KDFPBKDF2:
		if _, err := hashByName(k.Hash); err != nil {
			return fmt.Errorf("luks2: kdf: %w", err)
		}
		if k.Iterations < minPBKDF2Iterations {
			return fmt.Errorf("luks2: kdf: pbkdf2 iterations %d below the minimum %d", k.Iterations, minPBKDF2Iterations)
		}
	case KDFArgon2i, KDFArgon2id:
		if k.Time < minArgon2Time {
			return fmt.Errorf("luks2: kdf: %s time %d below the minimum %d", k.Type, k.Time, minArgon2Time)
		}
		if k.MemoryKiB < minArgon2Memory || k.MemoryKiB > maxArgon2Memory {
			return fmt.Errorf("luks2: kdf: %s memory %d KiB outside [%d, %d]", k.Type, k.MemoryKiB, minArgon2Memory, maxArgon2Memory)
		}
		if k.CPUs < 1 || k.CPUs > maxArgon2CPUs {
			return fmt.Errorf("luks2: kdf: %s cpus %d outside [1, %d]", k.Type, k.CPUs, maxArgon2CPUs)
		}
	default:
		return fmt.Errorf("%w: kdf type %q", ErrUnsupported, k.Type)
	}
	return nil
}

// derive runs the KDF over the passphrase into a locked key of n bytes.
func (k KDF) derive(passphrase, salt []byte, n int) (*secret.Key, error) {
	out, err := secret.New(n)
	if err != nil {
		return nil, err
	}
	if err := k.deriveInto(out.Bytes(), passphrase, salt); err != nil {
		out.Wipe()
		return nil, err
	}
	return out, nil
}

// deriveInto runs the KDF over the passphrase into dst, which the caller
// provides (in locked memory).
func (k KDF) deriveInto(dst, passphrase, salt []byte) error {
	switch k.Type {
	case KDFPBKDF2:
		if _, err := hashByName(k.Hash); err != nil {
			return fmt.Errorf("%w: kdf: %v", ErrUnsupported, err)
		}
		if k.Iterations == 0 {
			return fmt.Errorf("%w: kdf: pbkdf2 with zero iterations", ErrInvalidHeader)
		}
		return pbkdf2Into(k.Hash, dst, passphrase, salt, int(k.Iterations))
	case KDFArgon2i, KDFArgon2id:
		// Bounds that keep a hostile header from asking for more than
		// cryptsetup would ever write.
		if k.Time == 0 || k.MemoryKiB == 0 || k.MemoryKiB > maxArgon2Memory || k.CPUs == 0 || k.CPUs > 255 {
			return fmt.Errorf("%w: kdf: %s parameters time=%d memory=%d cpus=%d out of range",
				ErrUnsupported, k.Type, k.Time, k.MemoryKiB, k.CPUs)
		}
		var out []byte
		if k.Type == KDFArgon2i {
			out = argon2.Key(passphrase, salt, k.Time, k.MemoryKiB, uint8(k.CPUs), uint32(len(dst)))
		} else {
			out = argon2.IDKey(passphrase, salt, k.Time, k.MemoryKiB, uint8(k.CPUs), uint32(len(dst)))
		}
		copy(dst, out)
		secret.Zero(out)
		return nil
	default:
		return fmt.Errorf("%w: kdf type %q", ErrUnsupported, k.Type)
	}
}

// pbkdf2Key is PBKDF2 (RFC 8018) with HMAC over the named hash, written
// out here rather than taken from crypto/pbkdf2, whose API takes the
// password as a string: passphrases and volume keys must not be copied
// into immutable, unwipeable memory.
func pbkdf2Key(hashName string, password, salt []byte, iterations, n int) (*secret.Key, error) {
	out, err := secret.New(n)
	if err != nil {
		return nil, err
	}
	if err := pbkdf2Into(hashName, out.Bytes(), password, salt, iterations); err != nil {
		out.Wipe()
		return nil, err
	}
	return out, nil
}

// pbkdf2Into is pbkdf2Key into dst, which the caller provides.
func pbkdf2Into(hashName string, dst, password, salt []byte, iterations int) error {
	h, err := hashByName(hashName)
	if err != nil {
		return err
	}
	if hashName == "sha256" {
		pbkdf2SHA256(dst, password, salt, iterations)
		return nil
	}
	prf := hmac.New(h, password)
	size := prf.Size()
	u, err := secret.New(2 * size)
	if err != nil {
		return err
	}
	defer u.Wipe()
	ub, t := u.Bytes()[:size], u.Bytes()[size:]
	var counter [4]byte
	for block := uint32(1); len(dst) > 0; block++ {
		prf.Reset()
		prf.Write(salt)
		binary.BigEndian.PutUint32(counter[:], block)
		prf.Write(counter[:])
		prf.Sum(ub[:0])
		copy(t, ub)
		for i := 1; i < iterations; i++ {
			prf.Reset()
			prf.Write(ub)
			prf.Sum(ub[:0])
			for j := range t {
				t[j] ^= ub[j]
			}
		}
		dst = dst[copy(dst, t):]
	}
	return nil
}

// pbkdf2SHA256 is PBKDF2-HMAC-SHA256 into dst on the bare compression
// function. Every unlock runs it twice (keyslot KDF and volume key
// digest), thousands of iterations each, and an iteration is exactly two
// compressions: the inner and outer hash, each starting from the state
// after the padded key block and taking one 32-byte message whose padding
// never changes. The key-dependent states live on this goroutine's stack
// (locked memory in the workers, which mlockall) and are zeroed on return.
func pbkdf2SHA256(dst, password, salt []byte, iterations int) {
	const bs, size = sha256block.BlockSize, sha256block.Size
	var key [bs]byte
	if len(password) > bs {
		sum := sha256.Sum256(password)
		copy(key[:], sum[:])
		clear(sum[:])
	} else {
		copy(key[:], password)
	}
	var pad [bs]byte
	istate, ostate := sha256block.IV, sha256block.IV
	for i := range pad {
		pad[i] = key[i] ^ 0x36
	}
	sha256block.Blocks(&istate, pad[:])
	for i := range pad {
		pad[i] = key[i] ^ 0x5c
	}
	sha256block.Blocks(&ostate, pad[:])

	// blk[j] is one padded 32-byte message after the key block: the
	// message is rewritten in place, the padding stays. Two output
	// blocks (a 64-byte key has two) are independent chains, run in the
	// two lanes of Blocks2.
	var blk [2][bs]byte
	sha256block.Pad(blk[0][:], size, bs+size)
	sha256block.Pad(blk[1][:], size, bs+size)
	var st [2]sha256block.State
	var t [2][size]byte
	var buf [2 * bs]byte
	for block := uint32(1); len(dst) > 0; {
		lanes := 1
		if len(dst) > size {
			lanes = 2
		}
		// U1 = HMAC(salt || INT(block)); the salt may have any length.
		for j := range lanes {
			var counter [4]byte
			binary.BigEndian.PutUint32(counter[:], block+uint32(j))
			st[j] = istate
			hashTail(&st[j], buf[:], bs, salt, counter[:])
			st[j].Put(blk[j][:size])
			st[j] = ostate
			sha256block.Blocks(&st[j], blk[j][:])
			st[j].Put(blk[j][:size])
			copy(t[j][:], blk[j][:size])
		}
		if lanes == 2 {
			for i := 1; i < iterations; i++ {
				st[0], st[1] = istate, istate
				sha256block.Blocks2(&st[0], &st[1], blk[0][:], blk[1][:])
				st[0].Put(blk[0][:size])
				st[1].Put(blk[1][:size])
				st[0], st[1] = ostate, ostate
				sha256block.Blocks2(&st[0], &st[1], blk[0][:], blk[1][:])
				st[0].Put(blk[0][:size])
				st[1].Put(blk[1][:size])
				xor(t[0][:], blk[0][:size])
				xor(t[1][:], blk[1][:size])
			}
		} else {
			for i := 1; i < iterations; i++ {
				st[0] = istate
				sha256block.Blocks(&st[0], blk[0][:])
				st[0].Put(blk[0][:size])
				st[0] = ostate
				sha256block.Blocks(&st[0], blk[0][:])
				st[0].Put(blk[0][:size])
				xor(t[0][:], blk[0][:size])
			}
		}
		for j := range lanes {
			dst = dst[copy(dst, t[j][:]):]
		}
		block += uint32(lanes)
	}
	clear(key[:])
	clear(pad[:])
	clear(blk[0][:])
	clear(blk[1][:])
	clear(t[0][:])
	clear(t[1][:])
	clear(buf[:])
	istate, ostate, st = sha256block.State{}, sha256block.State{}, [2]sha256block.State{}
}

// hashTail hashes a || b into st, which has already taken prefix bytes
// (whole blocks), and pads: st is then the digest. buf is scratch of two
// blocks.
func hashTail(st *sha256block.State, buf []byte, prefix uint64, a, b []byte) {
	const bs = sha256block.BlockSize
	total := prefix + uint64(len(a)+len(b))
	n := 0
	for _, p := range [][]byte{a, b} {
		for len(p) > 0 {
			c := copy(buf[n:bs], p)
			n += c
			p = p[c:]
			if n == bs {
				sha256block.Blocks(st, buf[:bs])
				n = 0
			}
		}
	}
	sha256block.Blocks(st, sha256block.Pad(buf, n, total))
}

// hashByName maps the hash names LUKS2 uses to Go hashes.
func hashByName(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("hash %q is not supported (want sha1, sha256 or sha512)", name)
}
