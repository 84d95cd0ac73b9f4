package volume

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Device is a LUKS2 device or image file. *os.File qualifies.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// OpenDevice opens a block device or a regular file for the operations
// here. A block device is opened with O_EXCL, which the kernel refuses
// while the device is mounted, mapped or otherwise held, so a volume in
// use is never reformatted or rewritten under its user.
func OpenDevice(path string, write bool) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist", path)
		}
		return nil, err
	}
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		if write {
			flags |= unix.O_EXCL
		}
	default:
		return nil, fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	f, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%s is in use (mounted, mapped or held by another process); close it first", path)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// deviceSize returns the size of dev in bytes: the end offset for files
// and block devices (whose Stat size is zero).
func deviceSize(dev any) (int64, error) {
	s, ok := dev.(io.Seeker)
	if !ok {
		if l, ok := dev.(interface{ Len() int }); ok {
			return int64(l.Len()), nil
		}
		return 0, errors.New("cannot tell the device size")
	}
	n, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("device size: %w", err)
	}
	return n, nil
}
