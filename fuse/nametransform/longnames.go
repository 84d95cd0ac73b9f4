package nametransform

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Cipher names longer than NameMax cannot be directory entries. Such a
// file is stored as LongNamePrefix + Raw64(SHA-256(cipher name)), and the
// full cipher name is kept next to it in a file with LongNameSuffix
// appended:
//
//	gocryptfs.longname.<43 chars>        the file, directory or symlink
//	gocryptfs.longname.<43 chars>.name   its full cipher name
const (
	LongNamePrefix = "gocryptfs.longname."
	LongNameSuffix = ".name"
)

// Kinds of entries in a cipher directory, as returned by NameType.
const (
	// NameRegular is a candidate cipher name for DecryptName.
	NameRegular = iota
	// NameLongContent is gocryptfs.longname.<hash>: the entry itself,
	// whose cipher name is in the matching .name file.
	NameLongContent
	// NameLongFile is gocryptfs.longname.<hash>.name.
	NameLongFile
	// NameDirIV is gocryptfs.diriv.
	NameDirIV
	// NameOther is anything that cannot be an encrypted name and must be
	// hidden from the plaintext view: gocryptfs.conf, kmsagent.json,
	// lost+found, or any name with characters outside the Raw64 alphabet.
	NameOther
)

// hashLen is the length of the Raw64-encoded SHA-256 in a long name.
var hashLen = raw64.EncodedLen(sha256.Size)

// maxLongName is the largest .name file content: the cipher name of a
// 255-byte plaintext name (256 bytes after padding).
var maxLongName = raw64.EncodedLen(maxPadded)

// ErrLongName reports a long-name .name file that cannot be used.
var ErrLongName = errors.New("nametransform: invalid long-name file")

// HashLongName returns the on-disk name for the full cipher name cName.
func HashLongName(cName string) string {
	h := sha256.Sum256([]byte(cName))
	return LongNamePrefix + raw64.EncodeToString(h[:])
}

// NameType classifies an entry of a cipher directory without any I/O.
func NameType(cName string) int {
	switch {
	case cName == DirIVFilename:
		return NameDirIV
	case isLongHash(cName):
		return NameLongContent
	case strings.HasSuffix(cName, LongNameSuffix) && isLongHash(strings.TrimSuffix(cName, LongNameSuffix)):
		return NameLongFile
	case isRaw64(cName):
		return NameRegular
	}
	return NameOther
}

func isLongHash(s string) bool {
	h, ok := strings.CutPrefix(s, LongNamePrefix)
	return ok && len(h) == hashLen && isRaw64(h)
}

// isRaw64 reports whether s is non-empty and only uses the URL-safe
// base64 alphabet. Anything else cannot be one of our cipher names.
func isRaw64(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ReadLongNameAt returns the full cipher name stored for the long name
// hashName (gocryptfs.longname.<hash>) in the directory open as dirfd. The
// content must hash back to hashName, so a .name file swapped in from
// another entry is detected rather than giving this entry a wrong name.
func ReadLongNameAt(dirfd int, hashName string) (string, error) {
	if !isLongHash(hashName) {
		return "", fmt.Errorf("%w: %q is not a long name", ErrLongName, hashName)
	}
	f, err := openAt(dirfd, hashName+LongNameSuffix, 0, 0)
	if err != nil {
		return "", fmt.Errorf("nametransform: open %s%s: %w", hashName, LongNameSuffix, err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, int64(maxLongName)+1))
	if err != nil {
		return "", fmt.Errorf("nametransform: read %s%s: %w", hashName, LongNameSuffix, err)
	}
	if len(buf) == 0 || len(buf) > maxLongName {
		return "", fmt.Errorf("%w: %s%s has %d bytes, want 1..%d", ErrLongName, hashName, LongNameSuffix, len(buf), maxLongName)
	}
	cName := string(buf)
	if HashLongName(cName) != hashName {
		return "", fmt.Errorf("%w: %s%s does not hash to its name", ErrLongName, hashName, LongNameSuffix)
	}
	return cName, nil
}

// WriteLongNameAt stores the full cipher name cName for hashName (as
// returned by EncryptAndHashName) in the directory open as dirfd. It fails
// with EEXIST if the .name file exists, which the FS layer handles on
// rename-over.
func WriteLongNameAt(dirfd int, hashName, cName string) error {
	if HashLongName(cName) != hashName {
		return fmt.Errorf("%w: %q is not the hash of the given cipher name", ErrLongName, hashName)
	}
	return writeNewFileAt(dirfd, hashName+LongNameSuffix, []byte(cName), NamePerm)
}

// DeleteLongNameAt removes the .name file of hashName.
func DeleteLongNameAt(dirfd int, hashName string) error {
	if !isLongHash(hashName) {
		return fmt.Errorf("%w: %q is not a long name", ErrLongName, hashName)
	}
	return unlinkAt(dirfd, hashName+LongNameSuffix)
}
