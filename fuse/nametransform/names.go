// Package nametransform encrypts file and xattr names in the gocryptfs v2
// format (feature flags DirIV EMENames LongNames Raw64).
//
// A name is PKCS#7-padded to a multiple of 16 bytes, encrypted with EME
// (a wide-block mode, so every output byte depends on every input byte)
// using the AES name key and the 16-byte IV of the directory it lives in
// as the tweak, and encoded with URL-safe base64 without padding. Equal
// names in different directories therefore encrypt differently, while a
// lookup can still compute the cipher name without listing the directory.
// Cipher names longer than 255 bytes are replaced by a hash; see
// longnames.go.
package nametransform

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/rfjakob/eme"
)

const (
	// NameMax is the longest plaintext or cipher name, as on ext4.
	NameMax = 255
	// maxPadded is the longest padded name EME is ever asked about:
	// 255 bytes pad to 256.
	maxPadded = 256
)

// Errors wrap a syscall.Errno so that the FUSE layer can hand them to
// fs.ToErrno unchanged.
var (
	// ErrInvalidName: a plaintext name that cannot exist (empty, ".",
	// "..", containing '/' or NUL).
	ErrInvalidName = fmt.Errorf("nametransform: invalid name: %w", syscall.EINVAL)
	// ErrNameTooLong: a plaintext name over NameMax bytes.
	ErrNameTooLong = fmt.Errorf("nametransform: name longer than %d bytes: %w", NameMax, syscall.ENAMETOOLONG)
	// ErrBadCipherName: a name on disk that does not decrypt to a valid
	// name (foreign file, corruption, wrong key or wrong directory IV).
	ErrBadCipherName = fmt.Errorf("nametransform: cannot decrypt name: %w", syscall.EBADMSG)
)

// raw64 is the Raw64 feature flag: URL-safe base64 (no '/') without '='
// padding. Decoding is strict, so each plaintext name has exactly one
// cipher name and no second on-disk spelling can alias it.
var raw64 = base64.RawURLEncoding.Strict()

// NameTransform encrypts and decrypts names. It is safe for concurrent use.
type NameTransform struct {
	eme *eme.EMECipher
}

// New builds a NameTransform on the AES-256 name block from cryptocore.
func New(nameBlock cipher.Block) *NameTransform {
	if nameBlock.BlockSize() != aes.BlockSize {
		panic(fmt.Sprintf("nametransform: block size %d, EME needs %d", nameBlock.BlockSize(), aes.BlockSize))
	}
	return &NameTransform{eme: eme.New(nameBlock)}
}

// checkName enforces what a directory entry name may be.
func checkName(name string) error {
	switch {
	case len(name) > NameMax:
		return fmt.Errorf("%w: %d bytes", ErrNameTooLong, len(name))
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: contains '/' or NUL", ErrInvalidName)
	}
	return nil
}

func checkIV(iv []byte) error {
	if len(iv) != DirIVLen {
		return fmt.Errorf("nametransform: directory IV is %d bytes, want %d: %w", len(iv), DirIVLen, syscall.EINVAL)
	}
	return nil
}

// EncryptName returns the full cipher name of a plaintext name in the
// directory with IV dirIV, without long-name hashing. The FS layer needs
// it to write the .name file of a long name.
func (n *NameTransform) EncryptName(plain string, dirIV []byte) (string, error) {
	if err := checkName(plain); err != nil {
		return "", err
	}
	if err := checkIV(dirIV); err != nil {
		return "", err
	}
	return n.encrypt(plain, dirIV), nil
}

func (n *NameTransform) encrypt(plain string, iv []byte) string {
	return raw64.EncodeToString(n.eme.Encrypt(iv, pad16([]byte(plain))))
}

// EncryptAndHashName returns the name to use on disk: the cipher name, or
// gocryptfs.longname.<hash> when the cipher name is longer than NameMax
// (plaintext names from about 176 bytes up). The caller must then also
// write the full cipher name with WriteLongNameAt.
func (n *NameTransform) EncryptAndHashName(plain string, dirIV []byte) (string, error) {
	cName, err := n.EncryptName(plain, dirIV)
	if err != nil {
		return "", err
	}
	if len(cName) > NameMax {
		return HashLongName(cName), nil
	}
	return cName, nil
}

// DecryptName decrypts a full cipher name (for a long name: the content of
// its .name file) found in the directory with IV dirIV. Malformed input of
// any kind yields an error wrapping ErrBadCipherName, never a panic.
func (n *NameTransform) DecryptName(cName string, dirIV []byte) (string, error) {
	if err := checkIV(dirIV); err != nil {
		return "", err
	}
	plain, err := n.decrypt(cName, dirIV)
	if err != nil {
		return "", err
	}
	if err := checkName(plain); err != nil {
		return "", fmt.Errorf("%w: %q decrypts to an invalid name: %w", ErrBadCipherName, cName, err)
	}
	return plain, nil
}

func (n *NameTransform) decrypt(cName string, iv []byte) (string, error) {
	// Checked before decoding so that a huge input costs nothing.
	if len(cName) == 0 || len(cName) > raw64.EncodedLen(maxPadded) {
		return "", fmt.Errorf("%w: length %d", ErrBadCipherName, len(cName))
	}
	// encoding/base64 skips '\r' and '\n' even in strict mode; checking
	// the alphabet first keeps every name to one spelling.
	if !isRaw64(cName) {
		return "", fmt.Errorf("%w: %q: not unpadded URL-safe base64", ErrBadCipherName, cName)
	}
	bin, err := raw64.DecodeString(cName)
	if err != nil {
		return "", fmt.Errorf("%w: %q: base64: %w", ErrBadCipherName, cName, err)
	}
	if len(bin) == 0 || len(bin)%aes.BlockSize != 0 {
		return "", fmt.Errorf("%w: %q: %d bytes is not a whole number of AES blocks",
			ErrBadCipherName, cName, len(bin))
	}
	plain, err := unpad16(n.eme.Decrypt(iv, bin))
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrBadCipherName, cName, err)
	}
	return string(plain), nil
}

// pad16 applies PKCS#7 padding to a multiple of the AES block size; a name
// that already is a multiple gets a whole block of padding.
func pad16(b []byte) []byte {
	p := aes.BlockSize - len(b)%aes.BlockSize
	out := make([]byte, len(b)+p)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(p)
	}
	return out
}

var errPadding = errors.New("bad padding")

// unpad16 removes PKCS#7 padding. Every padding byte is checked, and a
// name that is only padding is rejected. The wrong key or IV almost always
// fails here, since EME turns the whole name into noise.
func unpad16(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%aes.BlockSize != 0 {
		return nil, errPadding
	}
	p := int(b[len(b)-1])
	if p == 0 || p > aes.BlockSize || p >= len(b) {
		return nil, errPadding
	}
	for _, x := range b[len(b)-p:] {
		if int(x) != p {
			return nil, errPadding
		}
	}
	return b[:len(b)-p], nil
}
