package contentenc

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// Extended attribute values and symlink targets are sealed like a single
// content block, but bound only to block number 0 and no file ID: they do
// not live in a file with a header. Unlike file blocks they may be longer
// than DefaultBS (xattr values up to 64 KiB, symlink targets up to 4 KiB).
//
// Names of xattrs are encrypted by package nametransform.

// maxValue bounds what DecryptXattrValue and DecryptSymlinkTarget accept:
// the Linux limit on an xattr value (XATTR_SIZE_MAX), far above the
// longest symlink target (PATH_MAX).
const maxValue = 64 << 10

// ErrValue reports an xattr value or symlink target that cannot be
// decrypted.
var ErrValue = errors.New("contentenc: invalid encrypted value")

// raw64 is gocryptfs's Raw64 encoding: URL-safe base64 without padding.
var raw64 = base64.RawURLEncoding

// EncryptXattrValue seals an xattr value for storage as raw binary. The
// empty value stays empty, as in gocryptfs.
func (c *ContentEnc) EncryptXattrValue(plain []byte) []byte {
	if len(plain) == 0 {
		return []byte{}
	}
	return c.seal(make([]byte, 0, len(plain)+Overhead), plain, 0, nil, new(scratch))
}

// DecryptXattrValue opens a stored xattr value. Early gocryptfs versions
// stored values base64-encoded; like gocryptfs, such a value is accepted
// when the binary form does not verify.
func (c *ContentEnc) DecryptXattrValue(stored []byte) ([]byte, error) {
	if len(stored) == 0 {
		return []byte{}, nil
	}
	plain, err := c.open(nil, stored, 0, nil, maxValue, new(scratch))
	if err == nil {
		return plain, nil
	}
	if bin, err2 := raw64.DecodeString(string(stored)); err2 == nil {
		if plain, err2 := c.open(nil, bin, 0, nil, maxValue, new(scratch)); err2 == nil {
			return plain, nil
		}
	}
	return nil, fmt.Errorf("%w: xattr value: %w", ErrValue, err)
}

// EncryptSymlinkTarget seals a symlink target and encodes it with Raw64, as
// gocryptfs stores it as the target of the cipher symlink. The empty
// target stays empty.
func (c *ContentEnc) EncryptSymlinkTarget(target string) string {
	if target == "" {
		return ""
	}
	return raw64.EncodeToString(c.seal(nil, []byte(target), 0, nil, new(scratch)))
}

// DecryptSymlinkTarget reverses EncryptSymlinkTarget.
func (c *ContentEnc) DecryptSymlinkTarget(stored string) (string, error) {
	if stored == "" {
		return "", nil
	}
	bin, err := raw64.DecodeString(stored)
	if err != nil {
		return "", fmt.Errorf("%w: symlink target is not base64: %w", ErrValue, err)
	}
	plain, err := c.open(nil, bin, 0, nil, maxValue, new(scratch))
	if err != nil {
		return "", fmt.Errorf("%w: symlink target: %w", ErrValue, err)
	}
	return string(plain), nil
}
