package cryptfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mount leaves file locking to the kernel, which implements flock and
// POSIX locks locally with exact semantics; that is all a single-host
// mount needs. A caller that mounts with go-fuse's EnableLocks instead
// gets these methods, which place the lock on the cipher file: flock
// locks map one to one (one cipher descriptor per open file
// description), POSIX locks become open-file-description locks of the
// handle, so two descriptors of one process conflict where POSIX would
// let them share.

var (
	_ fs.NodeGetlker  = (*node)(nil)
	_ fs.NodeSetlker  = (*node)(nil)
	_ fs.NodeSetlkwer = (*node)(nil)
)

// Getlk implements fs.NodeGetlker.
func (n *node) Getlk(ctx context.Context, f fs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	fh, ok := f.(*fileHandle)
	if !ok {
		return syscall.EBADF
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	if err := syscall.FcntlFlock(uintptr(fh.fd), unix.F_OFD_GETLK, &flk); err != nil {
		return errno(err)
	}
	out.FromFlockT(&flk)
	return 0
}

// Setlk implements fs.NodeSetlker.
func (n *node) Setlk(ctx context.Context, f fs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setLock(f, lk, flags, false)
}

// Setlkw implements fs.NodeSetlkwer.
func (n *node) Setlkw(ctx context.Context, f fs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setLock(f, lk, flags, true)
}

func (n *node) setLock(f fs.FileHandle, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	fh, ok := f.(*fileHandle)
	if !ok {
		return syscall.EBADF
	}
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = unix.LOCK_SH
		case syscall.F_WRLCK:
			op = unix.LOCK_EX
		case syscall.F_UNLCK:
			op = unix.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !wait {
			op |= unix.LOCK_NB
		}
		return errno(unix.Flock(fh.fd, op))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	return errno(syscall.FcntlFlock(uintptr(fh.fd), cmd, &flk))
}
