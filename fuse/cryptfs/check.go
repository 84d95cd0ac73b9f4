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

// Limits of the work CheckKey does in a large tree. It stops early once
// file content has decided.
const (
	checkMaxDirs     = 64
	checkMaxNames    = 256
	checkMaxContents = 3
	// checkMinNames is how many names must decrypt before names alone
	// vouch for a key. A wrong key passes the padding check of one name
	// about once in 290 tries; three in a row, once in 24 million.
	checkMinNames = 3
)

// ErrKeyUnverified is returned by CheckKey for a tree that holds too
// little encrypted data to tell a right master key from a wrong one: an
// empty share, or one whose few names could decrypt by chance. A caller
// that has verified the key otherwise (the envelope's key check) may go
// on; one that adopts a key on the tree's word must not.
var ErrKeyUnverified = errors.New("cryptfs: too little encrypted data to check the master key against")

// CheckKey tells whether core's master key is the one of the cipher
// directory before anything is mounted. It walks the tree breadth first
// from the root, decrypting names with each directory's diriv and the
// first block of a few regular files and symlink targets. Content is
// decisive (AES-GCM authenticates); names are only padding-checked, so
// they need a majority and at least checkMinNames of them. A wrong key
// yields ErrWrongKey; a tree without enough to decide, ErrKeyUnverified.
// Absence of evidence is never taken for a right key.
func CheckKey(cipherDir string, core *cryptocore.CryptoCore) error {
	fd, err := unix.Open(cipherDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: cipherDir, Err: err}
	}
	return checkKey(fd, cipherDir, core)
}

// CheckKeyDir is CheckKey on the cipher directory open as dir, which
// stays open.
func CheckKeyDir(dir *os.File, core *cryptocore.CryptoCore) error {
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir.Name(), Err: err}
	}
	return checkKey(fd, dir.Name(), core)
}

// checkKey checks the tree in fd, which it closes.
func checkKey(fd int, cipherDir string, core *cryptocore.CryptoCore) error {
	if _, err := nametransform.ReadDirIVAt(fd); err != nil {
		unix.Close(fd)
		if errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%w: %s", ErrNotCipherDir, cipherDir)
		}
		return fmt.Errorf("cryptfs: %s: %w", cipherDir, err)
	}
	c := keyChecker{
		nt: nametransform.New(core.NameBlock()),
		ce: contentenc.New(core.ContentAEAD()),
	}
	// Directories to visit, root first; each is closed once read.
	queue := []int{fd}
	defer func() {
		for _, d := range queue {
			unix.Close(d)
		}
	}()
	for dirs := 0; len(queue) > 0 && dirs < checkMaxDirs && !c.decided(); dirs++ {
		d := queue[0]
		queue = queue[1:]
		subdirs, err := c.checkDir(d, len(queue) < checkMaxDirs)
		unix.Close(d)
		if err != nil {
			return fmt.Errorf("cryptfs: read %s: %w", cipherDir, err)
		}
		queue = append(queue, subdirs...)
	}
	return c.verdict(cipherDir)
}

// keyChecker collects the evidence of CheckKey.
type keyChecker struct {
	nt *nametransform.NameTransform
	ce *contentenc.ContentEnc

	namesTried, namesOK     int
	contentTried, contentOK int
}

// decided tells whether content has settled the question, or the name
// budget is spent.
func (c *keyChecker) decided() bool {
	return c.contentOK > 0 || c.contentTried >= checkMaxContents || c.namesTried >= checkMaxNames
}

func (c *keyChecker) verdict(cipherDir string) error {
	switch {
	case c.contentOK > 0:
		return nil
	case c.contentTried > 0:
		return fmt.Errorf("%w: %s: %d of %d files fail authentication", ErrWrongKey, cipherDir, c.contentTried, c.contentTried)
	case c.namesTried > 0 && c.namesOK*2 < c.namesTried:
		return fmt.Errorf("%w: %s: %d of %d names do not decrypt", ErrWrongKey, cipherDir, c.namesTried-c.namesOK, c.namesTried)
	case c.namesOK >= checkMinNames:
		return nil
	}
	return fmt.Errorf("%w: %s holds no file content and %d encrypted names", ErrKeyUnverified, cipherDir, c.namesTried)
}

// checkDir checks the names and some content of the directory open as
// fd, and returns the subdirectories worth visiting (opened, with their
// diriv read) when more is wanted.
func (c *keyChecker) checkDir(fd int, wantSubdirs bool) (subdirs []int, err error) {
	iv, err := nametransform.ReadDirIVAt(fd)
	if err != nil {
		// A directory without diriv says nothing about the key.
		return nil, nil
	}
	buf := make([]byte, 16<<10)
	for !c.decided() {
		k, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			for _, d := range subdirs {
				unix.Close(d)
			}
			return nil, err
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
			if typ == unix.DT_UNKNOWN {
				// Some file systems (NFS, XFS without ftype) leave the
				// type out of the directory entry.
				typ = direntType(fd, cName)
			}
			c.namesTried++
			if _, err := c.nt.DecryptName(full, iv); err == nil {
				c.namesOK++
			}
			if c.contentTried < checkMaxContents {
				switch checkContent(c.ce, fd, cName, typ) {
				case checkGood:
					c.contentTried++
					c.contentOK++
				case checkBad:
					c.contentTried++
				}
			}
			if typ == unix.DT_DIR && wantSubdirs && len(subdirs) < checkMaxDirs {
				if sub, err := unix.Openat(fd, cName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
					subdirs = append(subdirs, sub)
				}
			}
			return !c.decided()
		})
	}
	return subdirs, nil
}

// direntType finds the type of a directory entry with fstatat.
func direntType(dirfd int, name string) uint8 {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return unix.DT_UNKNOWN
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	}
	return unix.DT_UNKNOWN
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
