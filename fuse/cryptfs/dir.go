package cryptfs

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/nametransform"
)

// maxSymlinkTarget is the longest symlink target Linux stores.
const maxSymlinkTarget = 4095

func procFdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// newName prepares a new entry name in directory n: it opens n and
// computes the cipher name, and for a long name writes the .name file.
// The returned undo removes a .name file this call created; call it if
// creating the entry fails. Unless it fails, the caller must closeDir.
type newEntry struct {
	fd      int
	cName   string
	long    bool
	created bool // the .name file was created here
}

func (n *node) prepareNew(name string) (newEntry, syscall.Errno) {
	if n.r.ro {
		return newEntry{}, syscall.EROFS
	}
	fd, iv, e := n.openDir()
	if e != 0 {
		return newEntry{}, e
	}
	cName, long, full, e := n.r.encryptName(name, iv)
	if e != 0 {
		n.closeDir()
		return newEntry{}, e
	}
	ne := newEntry{fd: fd, cName: cName, long: long}
	if long {
		err := n.writeLongName(fd, cName, full)
		switch {
		case err == nil:
			ne.created = true
		case errors.Is(err, syscall.EEXIST):
			// The entry (or a stale .name) exists; its content is the
			// same deterministic cipher name.
		default:
			n.closeDir()
			return newEntry{}, errno(err)
		}
	}
	return ne, 0
}

// undo removes the .name file if prepareNew created it.
func (ne newEntry) undo() {
	if ne.created {
		_ = nametransform.DeleteLongNameAt(ne.fd, ne.cName)
	}
}

// setOwner gives a new entry the caller's owner when we run as root, as
// a local file system would: the caller's user, and the caller's group
// unless the parent directory (dirfd) is set-group-ID, where the entry
// keeps the directory's group, which the kernel already gave it. fd >= 0
// names the entry itself; otherwise dirfd/name is changed without
// following a symlink. A change of owner clears the set-user-ID and
// set-group-ID bits of a non-directory, so mode, if it has either, is
// applied again.
func (r *rootData) setOwner(ctx context.Context, dirfd, fd int, name string, mode uint32) {
	if !r.chown {
		return
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok || (caller.Uid == 0 && caller.Gid == 0) {
		return
	}
	gid := int(caller.Gid)
	if setgidDir(dirfd) {
		gid = -1
	}
	if fd >= 0 {
		_ = unix.Fchown(fd, int(caller.Uid), gid)
		if mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			_ = unix.Fchmod(fd, mode&0o7777)
		}
		return
	}
	_ = unix.Fchownat(dirfd, name, int(caller.Uid), gid, unix.AT_SYMLINK_NOFOLLOW)
	if mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		_ = chmodAt(dirfd, name, mode&0o7777)
	}
}

// setgidDir reports whether directory dirfd is set-group-ID: its new
// entries take its group, and its new subdirectories the bit.
func setgidDir(dirfd int) bool {
	var st unix.Stat_t
	return unix.Fstat(dirfd, &st) == nil && st.Mode&unix.S_ISGID != 0
}

// Create implements fs.NodeCreater.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ne, e := n.prepareNew(name)
	if e != 0 {
		return nil, nil, 0, e
	}
	defer n.closeDir()
	oflags, e := n.r.cipherOpenFlags(flags)
	if e != 0 {
		ne.undo()
		return nil, nil, 0, e
	}
	// Truncating an existing file removes its header: do it under the
	// file's content lock so that its open handles notice.
	var existing *node
	if flags&unix.O_TRUNC != 0 {
		if ch := n.GetChild(name); ch != nil {
			existing, _ = ch.Operations().(*node)
		}
	}
	if existing != nil {
		existing.content.Lock()
	}
	fd, err := unix.Openat(ne.fd, ne.cName, oflags|unix.O_CREAT|unix.O_EXCL, mode)
	created := err == nil
	if err == unix.EEXIST && flags&unix.O_EXCL == 0 {
		// The kernel saw no such name, yet it exists (created
		// meanwhile, or through another mount of the cipher
		// directory): open it as open(2) would, keeping its owner.
		fd, err = unix.Openat(ne.fd, ne.cName, oflags, 0)
	}
	if existing != nil {
		if err == nil {
			existing.hdrGen++
		}
		existing.content.Unlock()
	}
	if err != nil {
		ne.undo()
		return nil, nil, 0, errno(err)
	}
	if created {
		n.r.setOwner(ctx, ne.fd, fd, "", mode)
	}
	var x unix.Statx_t
	if e := statAt(fd, "", &x); e != 0 {
		unix.Close(fd)
		return nil, nil, 0, e
	}
	ch := n.newChild(ctx, -1, name, ne.cName, &x, out)
	return ch, &fileHandle{fd: fd}, fuse.FOPEN_NOFLUSH, 0
}

// Mkdir implements fs.NodeMkdirer. The directory is created with the
// requested mode plus the owner's rwx, which writing its gocryptfs.diriv
// needs, so that a default ACL of the parent applies to the requested
// mode; owner bits it lacks are taken away afterwards, as gocryptfs does.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ne, e := n.prepareNew(name)
	if e != 0 {
		return nil, e
	}
	defer n.closeDir()
	if err := unix.Mkdirat(ne.fd, ne.cName, mode&0o7777|0o700); err != nil {
		ne.undo()
		return nil, errno(err)
	}
	fail := func(e syscall.Errno) (*fs.Inode, syscall.Errno) {
		_ = unix.Unlinkat(ne.fd, ne.cName, unix.AT_REMOVEDIR)
		ne.undo()
		return nil, e
	}
	cfd, err := unix.Openat(ne.fd, ne.cName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(errno(err))
	}
	if err := writeMetaFile(cfd, nametransform.DirIVFilename, randomIV(), nametransform.DirIVPerm); err != nil {
		unix.Close(cfd)
		return fail(errno(err))
	}
	if mode&0o700 != 0o700 {
		var st unix.Stat_t
		err := unix.Fstat(cfd, &st)
		if err == nil {
			err = unix.Fchmod(cfd, st.Mode&0o7777&^0o700|mode&0o700)
		}
		if err != nil {
			_ = unix.Unlinkat(cfd, nametransform.DirIVFilename, 0)
			unix.Close(cfd)
			return fail(errno(err))
		}
	}
	n.r.setOwner(ctx, ne.fd, cfd, "", 0)
	var x unix.Statx_t
	if e := statAt(cfd, "", &x); e != 0 {
		unix.Close(cfd)
		return nil, e
	}
	ch := n.newChild(ctx, -1, name, ne.cName, &x, out)
	// Keep the descriptor: the new directory is about to be used.
	chn := ch.Operations().(*node)
	chn.addUnsynced(nametransform.DirIVFilename)
	n.r.fds.install(chn, cfd)
	n.r.fds.release(chn)
	return ch, 0
}

// Mknod implements fs.NodeMknoder (fifos, sockets, device nodes).
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ne, e := n.prepareNew(name)
	if e != 0 {
		return nil, e
	}
	defer n.closeDir()
	if err := unix.Mknodat(ne.fd, ne.cName, mode, int(dev)); err != nil {
		ne.undo()
		return nil, errno(err)
	}
	n.r.setOwner(ctx, ne.fd, -1, ne.cName, mode)
	var x unix.Statx_t
	if e := statAt(ne.fd, ne.cName, &x); e != 0 {
		return nil, e
	}
	return n.newChild(ctx, ne.fd, name, ne.cName, &x, out), 0
}

// Symlink implements fs.NodeSymlinker. The target is encrypted like file
// content (block 0, no file ID) and stored Raw64-encoded.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.r.ro {
		return nil, syscall.EROFS
	}
	cTarget := n.r.ce.EncryptSymlinkTarget(target)
	if len(cTarget) > maxSymlinkTarget {
		return nil, syscall.ENAMETOOLONG
	}
	ne, e := n.prepareNew(name)
	if e != 0 {
		return nil, e
	}
	defer n.closeDir()
	if err := unix.Symlinkat(cTarget, ne.fd, ne.cName); err != nil {
		ne.undo()
		return nil, errno(err)
	}
	n.r.setOwner(ctx, ne.fd, -1, ne.cName, 0)
	var x unix.Statx_t
	if e := statAt(ne.fd, ne.cName, &x); e != 0 {
		return nil, e
	}
	ch := n.newChild(ctx, -1, name, ne.cName, &x, out)
	out.Attr.Size = uint64(len(target))
	return ch, 0
}

// Link implements fs.NodeLinker.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.r != n.r {
		return nil, syscall.EXDEV
	}
	if n.r.ro {
		return nil, syscall.EROFS
	}
	tp, tfd, tc, e := t.locate()
	if e != 0 {
		return nil, e
	}
	defer tp.closeDir()
	ne, e := n.prepareNew(name)
	if e != 0 {
		return nil, e
	}
	defer n.closeDir()
	if err := unix.Linkat(tfd, tc, ne.fd, ne.cName, 0); err != nil {
		ne.undo()
		return nil, errno(err)
	}
	var x unix.Statx_t
	if e := statAt(ne.fd, ne.cName, &x); e != 0 {
		return nil, e
	}
	return n.newChild(ctx, ne.fd, name, ne.cName, &x, out), 0
}

// Unlink implements fs.NodeUnlinker.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.removeEntry(name, func(fd int, cName string) syscall.Errno {
		return errno(unix.Unlinkat(fd, cName, 0))
	})
}

// Rmdir implements fs.NodeRmdirer. A plaintext-empty directory still
// holds gocryptfs.diriv; see rmdirCipher.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.removeEntry(name, rmdirCipher); e != 0 {
		return e
	}
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			n.r.fds.drop(cn, false)
		}
	}
	return 0
}

// removeEntry removes the cipher entry of name with remove, then its
// long-name file when it has one.
func (n *node) removeEntry(name string, remove func(dirfd int, cName string) syscall.Errno) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	fd, iv, e := n.openDir()
	if e != 0 {
		return e
	}
	defer n.closeDir()
	cName, long, _, e := n.r.encryptName(name, iv)
	if e != 0 {
		return e
	}
	if e := remove(fd, cName); e != 0 {
		return e
	}
	if long {
		_ = nametransform.DeleteLongNameAt(fd, cName)
	}
	return 0
}

// rmdirCipher removes directory cName in dirfd if it holds nothing but
// its gocryptfs.diriv (else ENOTEMPTY). The IV is removed first and put
// back, with the same bytes, if the rmdir fails, e.g. because an entry
// was created concurrently.
func rmdirCipher(dirfd int, cName string) syscall.Errno {
	cfd, err := unix.Openat(dirfd, cName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(cfd)
	hasIV := false
	buf := make([]byte, 4096)
	for {
		k, err := unix.Getdents(cfd, buf)
		if err != nil {
			return errno(err)
		}
		if k <= 0 {
			break
		}
		notEmpty := false
		walkDirents(buf[:k], func(name []byte, _ uint64, _ uint8) bool {
			s := string(name)
			switch s {
			case ".", "..":
			case nametransform.DirIVFilename:
				hasIV = true
			default:
				notEmpty = true
				return false
			}
			return true
		})
		if notEmpty {
			return syscall.ENOTEMPTY
		}
	}
	var iv []byte
	if hasIV {
		iv, err = nametransform.ReadDirIVAt(cfd)
		if err != nil {
			iv = nil // unreadable; it cannot be restored, remove anyway
		}
		if err := unix.Unlinkat(cfd, nametransform.DirIVFilename, 0); err != nil {
			return errno(err)
		}
	}
	if err := unix.Unlinkat(dirfd, cName, unix.AT_REMOVEDIR); err != nil {
		if iv != nil {
			restoreDirIV(cfd, iv)
		}
		return errno(err)
	}
	return 0
}

// restoreDirIV writes back a directory IV removed by rmdirCipher.
func restoreDirIV(dirfd int, iv []byte) {
	fd, err := unix.Openat(dirfd, nametransform.DirIVFilename, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, nametransform.DirIVPerm)
	if err != nil {
		return
	}
	_, _ = unix.Write(fd, iv)
	unix.Close(fd)
}

// Rename implements fs.NodeRenamer, including RENAME_NOREPLACE and
// RENAME_EXCHANGE. Long names get their .name file written in the target
// directory before the rename and removed in the source after it.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.r != n.r {
		return syscall.EXDEV
	}
	if n.r.ro {
		return syscall.EROFS
	}
	fd1, iv1, e := n.openDir()
	if e != 0 {
		return e
	}
	defer n.closeDir()
	fd2, iv2, e := np.openDir()
	if e != 0 {
		return e
	}
	defer np.closeDir()
	c1, long1, _, e := n.r.encryptName(name, iv1)
	if e != 0 {
		return e
	}
	c2, long2, full2, e := n.r.encryptName(newName, iv2)
	if e != 0 {
		return e
	}
	same := n == np && c1 == c2
	exchange := flags&unix.RENAME_EXCHANGE != 0
	created := false
	if long2 && !exchange && !same {
		err := np.writeLongName(fd2, c2, full2)
		switch {
		case err == nil:
			created = true
		case errors.Is(err, syscall.EEXIST):
		default:
			return errno(err)
		}
	}
	err := unix.Renameat2(fd1, c1, fd2, c2, uint(flags))
	if (err == unix.ENOTEMPTY || err == unix.EEXIST) && flags == 0 {
		// The target may be a directory that is empty in the plaintext
		// view but still holds its diriv. POSIX lets a directory
		// replace an empty one, so remove it and try again.
		var x unix.Statx_t
		if statAt(fd2, c2, &x) == 0 && x.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			if rmdirCipher(fd2, c2) == 0 {
				err = unix.Renameat2(fd1, c1, fd2, c2, 0)
			}
		}
	}
	if err != nil {
		if created {
			_ = nametransform.DeleteLongNameAt(fd2, c2)
		}
		return errno(err)
	}
	if long1 && !exchange && !same {
		_ = nametransform.DeleteLongNameAt(fd1, c1)
	}
	if ch := n.GetChild(name); ch != nil && !exchange {
		if cn, ok := ch.Operations().(*node); ok {
			cn.setCName(np, newName, c2)
		}
	}
	return 0
}
