package nametransform

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const (
	// DirIVFilename holds the 16 random bytes that tweak the encryption
	// of all names in its directory. Every cipher directory has one,
	// created with the directory and never changed.
	DirIVFilename = "gocryptfs.diriv"
	// DirIVLen is the IV length: one AES block, the EME tweak size.
	DirIVLen = 16
	// DirIVPerm and NamePerm are the modes gocryptfs 2.x gives
	// gocryptfs.diriv and long-name .name files: read-only, as they never
	// change, but world-readable so that a cipher directory can be copied
	// or served by a user other than the one who created it.
	DirIVPerm = 0o444
	NamePerm  = 0o444
)

// ErrDirIV reports a gocryptfs.diriv that cannot be used.
var ErrDirIV = errors.New("nametransform: invalid " + DirIVFilename)

// ReadDirIVAt reads gocryptfs.diriv from the directory open as dirfd.
// Working relative to a directory fd keeps the result right even if the
// directory is renamed meanwhile, and O_NOFOLLOW refuses a planted symlink.
func ReadDirIVAt(dirfd int) ([]byte, error) {
	f, err := openAt(dirfd, DirIVFilename, unix.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("nametransform: open %s: %w", DirIVFilename, err)
	}
	defer f.Close()
	// One byte more than needed, to notice a file that is too long.
	iv := make([]byte, DirIVLen+1)
	n, err := io.ReadFull(f, iv)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("nametransform: read %s: %w", DirIVFilename, err)
	}
	if n != DirIVLen {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrDirIV, min(n, DirIVLen+1), DirIVLen)
	}
	iv = iv[:DirIVLen]
	if isZero(iv) {
		// What a crash can leave of a file whose data never hit the disk.
		return nil, fmt.Errorf("%w: all-zero", ErrDirIV)
	}
	return iv, nil
}

// WriteDirIVAt creates gocryptfs.diriv with a fresh random IV in the
// directory open as dirfd. It fails if the file exists (O_EXCL): replacing
// an IV would make every name in the directory undecryptable. The data is
// fsynced before returning, and a partial file is removed on error.
func WriteDirIVAt(dirfd int) error {
	iv := make([]byte, DirIVLen)
	if _, err := rand.Read(iv); err != nil {
		return fmt.Errorf("nametransform: random directory IV: %w", err)
	}
	return writeNewFileAt(dirfd, DirIVFilename, iv, DirIVPerm)
}

// writeNewFileAt creates name exclusively, writes data, fsyncs, and
// removes the file again if any step fails.
func writeNewFileAt(dirfd int, name string, data []byte, perm uint32) (err error) {
	f, err := openAt(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("nametransform: create %s: %w", name, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("nametransform: close %s: %w", name, cerr)
		}
		if err != nil {
			_ = unix.Unlinkat(dirfd, name, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("nametransform: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("nametransform: fsync %s: %w", name, err)
	}
	return nil
}

// openAt opens name relative to dirfd without following a final symlink,
// retrying on EINTR (FUSE and NFS below us can interrupt).
func openAt(dirfd int, name string, flags int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func unlinkAt(dirfd int, name string) error {
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return fmt.Errorf("nametransform: unlink %s: %w", name, err)
	}
	return nil
}
