package nametransform

import (
	"fmt"
	"strings"
	"syscall"
)

// Extended attribute names are encrypted like file names but with a fixed
// tweak, since an xattr belongs to no directory, and stored in the "user."
// namespace (the only one unprivileged processes may write) under the
// prefix below. The whole plaintext name, namespace included, is
// encrypted: "user.foo" is stored as "user.gocryptfs.<Raw64(EME(...))>".
//
// gocryptfs passes the POSIX ACL names system.posix_acl_access and
// system.posix_acl_default through unencrypted (the kernel must read
// them), and hides stored names without the prefix; both are decisions of
// the FS layer, not of this package.
//
// Values are encrypted by contentenc.EncryptXattrValue.
const XattrStorePrefix = "user.gocryptfs."

// xattrNameMax is the kernel's limit on an xattr name (XATTR_NAME_MAX).
const xattrNameMax = 255

// xattrIV is the fixed EME tweak for xattr names: 16 readable bytes.
// It is part of the on-disk format.
const xattrIV = "xattr_name_iv_xx"

func checkXattrName(name string) error {
	switch {
	case name == "" || strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: xattr name %q", ErrInvalidName, name)
	case len(name) > xattrNameMax:
		return fmt.Errorf("nametransform: xattr name of %d bytes: %w", len(name), syscall.ERANGE)
	}
	return nil
}

// EncryptXattrName returns the stored name for the plaintext xattr name.
// Xattr names may contain '/', unlike file names. Because encryption grows
// a name by about 4/3 plus the prefix, plaintext names over 175 bytes do
// not fit the kernel's 255-byte limit; those are refused here with ERANGE,
// which is what the kernel would answer.
func (n *NameTransform) EncryptXattrName(plain string) (string, error) {
	if err := checkXattrName(plain); err != nil {
		return "", err
	}
	stored := XattrStorePrefix + n.encrypt(plain, []byte(xattrIV))
	if len(stored) > xattrNameMax {
		return "", fmt.Errorf("nametransform: xattr name of %d bytes encrypts to %d: %w",
			len(plain), len(stored), syscall.ERANGE)
	}
	return stored, nil
}

// DecryptXattrName reverses EncryptXattrName. A stored name without the
// prefix is not one of ours and is an error.
func (n *NameTransform) DecryptXattrName(stored string) (string, error) {
	c, ok := strings.CutPrefix(stored, XattrStorePrefix)
	if !ok {
		return "", fmt.Errorf("%w: xattr %q lacks prefix %q", ErrBadCipherName, stored, XattrStorePrefix)
	}
	plain, err := n.decrypt(c, []byte(xattrIV))
	if err != nil {
		return "", fmt.Errorf("xattr: %w", err)
	}
	if err := checkXattrName(plain); err != nil {
		return "", fmt.Errorf("%w: xattr %q decrypts to an invalid name: %w", ErrBadCipherName, stored, err)
	}
	return plain, nil
}
