package cryptfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/nametransform"
)

// Limits of the work CheckKey does in a large root directory.
const (
	checkMaxNames    = 64
	checkMaxContents = 3
)

// CheckKey tells whether core's master key is the one of the cipher
// directory before anything is mounted. It decrypts names in the root
// directory and the first block of a few regular files and symlink
// targets there. Content is decisive (AES-GCM authenticates); names are
// only padding-checked, so they need a majority. An empty root cannot be
// checked and passes. A wrong key yields ErrWrongKey.
func CheckKey(cipherDir string, core *cryptocore.CryptoCore) error {
	fd, err := unix.Open(cipherDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: cipherDir, Err: err}
	}
	defer unix.Close(fd)
	iv, err := nametransform.ReadDirIVAt(fd)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%w: %s", ErrNotCipherDir, cipherDir)
		}
		return fmt.Errorf("cryptfs: %s: %w", cipherDir, err)
	}
	nt := nametransform.New(core.NameBlock())
	ce := contentenc.New(core.ContentAEAD())

	var namesTried, namesOK, contentTried, contentOK int
	buf := make([]byte, 16<<10)
	done := false
	for !done {
		k, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("cryptfs: read %s: %w", cipherDir, err)
		}
		if k <= 0 {
			break
		}
		walkDirents(buf[:k], func(raw []byte, _ uint64, typ uint8) bool {
			cName := string(raw)
			full := cName
			switch nametransform.NameType(cName) {
			case nametransform.NameRegular:
			case nametransform.NameLongContent:
				if full, err = nametransform.ReadLongNameAt(fd, cName); err != nil {
					return true
				}
			default:
				return true
			}
			namesTried++
			if _, err := nt.DecryptName(full, iv); err == nil {
				namesOK++
			}
			if contentTried < checkMaxContents {
				switch checkContent(ce, fd, cName, typ) {
				case checkGood:
					contentTried++
					contentOK++
				case checkBad:
					contentTried++
				}
			}
			if namesTried >= checkMaxNames && contentTried >= checkMaxContents {
				done = true
				return false
			}
			return true
		})
	}
	switch {
	case contentOK > 0:
		return nil
	case contentTried > 0:
		return fmt.Errorf("%w: %s: %d of %d files fail authentication", ErrWrongKey, cipherDir, contentTried, contentTried)
	case namesTried > 0 && namesOK*2 < namesTried:
		return fmt.Errorf("%w: %s: %d of %d names do not decrypt", ErrWrongKey, cipherDir, namesTried-namesOK, namesTried)
	}
	return nil
}

type checkResult int

const (
	checkNone checkResult = iota // nothing to check (empty file, hole, other type)
	checkGood
	checkBad
)

// checkContent decrypts the first block of a regular file or the target
// of a symlink.
func checkContent(ce *contentenc.ContentEnc, dirfd int, cName string, typ uint8) checkResult {
	switch typ {
	case unix.DT_LNK:
		buf := make([]byte, 8192)
		k, err := unix.Readlinkat(dirfd, cName, buf)
		if err != nil {
			return checkNone
		}
		if _, err := ce.DecryptSymlinkTarget(string(buf[:k])); err != nil {
			return checkBad
		}
		return checkGood
	case unix.DT_REG:
		fd, err := unix.Openat(dirfd, cName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return checkNone
		}
		defer unix.Close(fd)
		buf := make([]byte, contentenc.HeaderLen+contentenc.CipherBS)
		k, err := preadFull(fd, buf, 0)
		if err != nil || k <= contentenc.HeaderLen+contentenc.Overhead {
			return checkNone
		}
		h, err := contentenc.ParseHeader(buf[:contentenc.HeaderLen])
		if err != nil {
			return checkNone
		}
		block := buf[contentenc.HeaderLen:k]
		if isZero(block) {
			return checkNone // a hole says nothing
		}
		if _, err := ce.DecryptBlock(nil, block, 0, h.ID[:]); err != nil {
			return checkBad
		}
		return checkGood
	}
	return checkNone
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
