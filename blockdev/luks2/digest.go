package luks2

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	"kmsagent/agent/secret"
)

// segmentDigest returns the digest that guards a segment's volume key.
func (m *metadata) segmentDigest(seg int) (*digest, error) {
	for _, id := range sortedKeys(m.digests) {
		d := m.digests[id]
		for _, s := range d.segments {
			if s == seg {
				return d, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no digest for segment %d", ErrInvalidHeader, seg)
}

// verify checks a volume key against a pbkdf2 digest: PBKDF2 of the key
// with the digest's salt and iterations must give the stored value.
func (d *digest) verify(vk []byte) (bool, error) {
	if d.typ != "pbkdf2" {
		return false, fmt.Errorf("%w: digest type %q", ErrUnsupported, d.typ)
	}
	if _, err := hashByName(d.hash); err != nil {
		return false, fmt.Errorf("%w: digest %d: %v", ErrUnsupported, d.id, err)
	}
	// The result is compared with a value stored in the clear, and a
	// PBKDF2 output reveals nothing of its password: it needs no locked
	// buffer of its own. The digest is 20 bytes or the hash's size.
	var buf [64]byte
	if len(d.value) > len(buf) {
		return false, fmt.Errorf("%w: digest %d is %d bytes", ErrInvalidHeader, d.id, len(d.value))
	}
	got := buf[:len(d.value)]
	defer clear(got)
	if err := pbkdf2Into(d.hash, got, vk, d.salt, d.iterations); err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, d.value) == 1, nil
}

// VerifyVolumeKey checks a volume key against the digest of the data
// segment and returns that digest's id, or ErrWrongVolumeKey.
func (h *Header) VerifyVolumeKey(vk *secret.Key) (int, error) {
	if err := h.reencrypting(); err != nil {
		return -1, err
	}
	d, err := h.meta.segmentDigest(dataSegment)
	if err != nil {
		return -1, err
	}
	ok, err := d.verify(vk.Bytes())
	if err != nil {
		return -1, err
	}
	if !ok {
		return -1, ErrWrongVolumeKey
	}
	return d.id, nil
}

// newDigestJSON makes a pbkdf2 digest of vk for segment 0, members in the
// order cryptsetup writes them.
func newDigestJSON(vk []byte, hashName string, iterations int) (*object, error) {
	h, err := hashByName(hashName)
	if err != nil {
		return nil, fmt.Errorf("luks2: digest: %w", err)
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("luks2: digest salt: %w", err)
	}
	sum, err := pbkdf2Key(hashName, vk, salt, iterations, h().Size())
	if err != nil {
		return nil, err
	}
	defer sum.Wipe()
	o := &object{}
	o.set("type", encodeValue("pbkdf2"))
	o.set("keyslots", encodeValue([]string{}))
	o.set("segments", encodeValue([]string{"0"}))
	o.set("hash", encodeValue(hashName))
	o.set("iterations", encodeValue(iterations))
	o.set("salt", encodeValue(base64.StdEncoding.EncodeToString(salt)))
	o.set("digest", encodeValue(base64.StdEncoding.EncodeToString(sum.Bytes())))
	return o, nil
}
