package cryptfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/nametransform"
)

// node is one inode of the plaintext view: a directory, regular file,
// symlink or special file. go-fuse keeps one node per cipher inode, so
// hard links share it.
type node struct {
	fs.Inode
	r *rootData

	// mu guards the cipher name cache: cnCName is this node's cipher
	// name when reached as cnName in directory cnParent.
	mu       sync.Mutex
	cnParent *node
	cnName   string
	cnCName  string

	// Directory descriptor state, guarded by r.fds.mu.
	dfd        int
	drefs      int
	gone       bool
	prev, next *node

	// ivMu guards iv, the directory IV, read once.
	ivMu sync.Mutex
	iv   []byte

	// metaMu guards unsynced: metadata files of this directory (its
	// gocryptfs.diriv, .name files of its entries) written without
	// fsync; see syncMeta.
	metaMu   sync.Mutex
	unsynced map[string]struct{}

	// content is the file's content lock: shared by readers, exclusive
	// for anything that changes the cipher file's blocks or header.
	content sync.RWMutex
	// hdrGen counts removals of the file header (truncation to zero),
	// so that open handles drop their cached file ID. Guarded by
	// content (written with it held exclusively).
	hdrGen uint64

	caps capCache // see xattr.go
}

var (
	_ fs.InodeEmbedder      = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeOnForgetter    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeFlusher        = (*node)(nil)
	_ fs.NodeReleaser       = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
)

func (r *rootData) newNode() *node { return &node{r: r, dfd: -1} }

// openDir returns a descriptor and the IV of directory n. Unless it fails,
// the caller must call closeDir.
func (n *node) openDir() (int, []byte, syscall.Errno) {
	fd, e := n.r.fds.acquire(n)
	if e != 0 {
		return -1, nil, e
	}
	iv, e := n.dirIV(fd)
	if e != 0 {
		n.closeDir()
		return -1, nil, e
	}
	return fd, iv, 0
}

func (n *node) closeDir() { n.r.fds.release(n) }

// dirIV returns the directory IV of n, read from fd on first use. A
// directory's IV never changes, so it is cached for the node's lifetime.
func (n *node) dirIV(fd int) ([]byte, syscall.Errno) {
	n.ivMu.Lock()
	defer n.ivMu.Unlock()
	if n.iv != nil {
		return n.iv, 0
	}
	iv, err := nametransform.ReadDirIVAt(fd)
	if err != nil {
		if n.r.reported.first(reportKey{kind: reportName, ino: n.StableAttr().Ino, name: "diriv"}) {
			n.r.log.Warn("cryptfs: unreadable directory IV", "dir", n.plainPath(), "err", err)
		}
		return nil, syscall.EIO
	}
	n.iv = iv
	return iv, 0
}

// locate finds where n lives in the cipher directory: an open descriptor
// of one of its parent directories and its cipher name there. Unless it
// fails, the caller must call closeDir on the returned parent. A node
// that is in no directory any more (unlinked while open) yields ENOENT.
func (n *node) locate() (*node, int, string, syscall.Errno) {
	name, pi := n.Parent()
	if pi == nil {
		return nil, -1, "", syscall.ENOENT
	}
	p, ok := pi.Operations().(*node)
	if !ok {
		return nil, -1, "", syscall.EIO
	}
	pfd, iv, e := p.openDir()
	if e != 0 {
		return nil, -1, "", e
	}
	n.mu.Lock()
	if n.cnParent == p && n.cnName == name {
		c := n.cnCName
		n.mu.Unlock()
		return p, pfd, c, 0
	}
	n.mu.Unlock()
	cName, _, _, e := n.r.encryptName(name, iv)
	if e != 0 {
		p.closeDir()
		return nil, -1, "", e
	}
	n.setCName(p, name, cName)
	return p, pfd, cName, 0
}

func (n *node) setCName(p *node, name, cName string) {
	n.mu.Lock()
	n.cnParent, n.cnName, n.cnCName = p, name, cName
	n.mu.Unlock()
}

// plainPath is n's path in the plaintext view, for log lines.
func (n *node) plainPath() string {
	p := n.Path(n.r.root.EmbeddedInode())
	if p == "" {
		return "/"
	}
	return "/" + p
}

// childPath is the plaintext path of entry name in directory n.
func (n *node) childPath(name string) string {
	if n == n.r.root {
		return "/" + name
	}
	return n.plainPath() + "/" + name
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statAt stats name in directory dirfd without following symlinks; an
// empty name stats dirfd itself.
func statAt(dirfd int, name string, x *unix.Statx_t) syscall.Errno {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	return errno(unix.Statx(dirfd, name, flags, statxMask, x))
}

func swapHalves(d uint64) uint64 { return d<<32 | d>>32 }

// stableAttr derives the go-fuse identity of a cipher inode: its inode
// number (mixed with the device when the cipher directory spans several
// file systems) and its birth time as generation, so that a recycled
// inode number is a new node.
func (r *rootData) stableAttr(x *unix.Statx_t) fs.StableAttr {
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	gen := uint64(1)
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return fs.StableAttr{
		Mode: uint32(x.Mode) & syscall.S_IFMT,
		Ino:  swapHalves(dev) ^ swapHalves(r.rootDev) ^ x.Ino,
		Gen:  gen,
	}
}

// fillAttr copies the cipher inode's attributes into a. Sizes are still
// cipher sizes; see plainAttr.
func (r *rootData) fillAttr(a *fuse.Attr, x *unix.Statx_t) {
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	a.Ino = swapHalves(dev) ^ swapHalves(r.rootDev) ^ x.Ino
	a.Size = x.Size
	a.Blocks = x.Blocks
	a.Atime, a.Atimensec = uint64(x.Atime.Sec), x.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(x.Mtime.Sec), x.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(x.Ctime.Sec), x.Ctime.Nsec
	a.Mode = uint32(x.Mode)
	a.Nlink = x.Nlink
	a.Uid, a.Gid = x.Uid, x.Gid
	a.Rdev = uint32(unix.Mkdev(x.Rdev_major, x.Rdev_minor))
	a.Blksize = x.Blksize
}

// plainAttr fills a from x and translates the size to what the plaintext
// view shows: the plaintext size of a regular file, the length of the
// decrypted target of a symlink (read through dirfd/cName).
// where names the file in log lines.
func (r *rootData) plainAttr(a *fuse.Attr, x *unix.Statx_t, dirfd int, cName string, where func() string) {
	r.fillAttr(a, x)
	switch x.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		a.Size = r.plainSize(x.Size, a.Ino, where)
	case syscall.S_IFLNK:
		if dirfd < 0 {
			return
		}
		if t, e := r.readSymlink(dirfd, cName, a.Ino, where); e == 0 {
			a.Size = uint64(len(t))
		}
	}
}

// plainSize converts a cipher file size. A size no correct writer
// produces (a cut header or a last block too short to hold data) is
// logged and rounded down to the last complete block: reads of the
// damaged tail then see end of file instead of wrong data.
func (r *rootData) plainSize(cipher uint64, ino uint64, where func() string) uint64 {
	s, err := contentenc.PlainSize(cipher)
	if err == nil {
		return s
	}
	if r.reported.first(reportKey{kind: reportSize, ino: ino, block: cipher}) {
		r.log.Warn("cryptfs: cipher file has an invalid size", "file", where(), "ino", ino, "cipher_size", cipher, "err", err)
	}
	if cipher < contentenc.HeaderLen {
		return 0
	}
	return (cipher - contentenc.HeaderLen) / contentenc.CipherBS * contentenc.DefaultBS
}

// readSymlink reads and decrypts the symlink dirfd/cName.
func (r *rootData) readSymlink(dirfd int, cName string, ino uint64, where func() string) (string, syscall.Errno) {
	buf := make([]byte, 8192)
	k, err := unix.Readlinkat(dirfd, cName, buf)
	if err != nil {
		return "", errno(err)
	}
	t, err := r.ce.DecryptSymlinkTarget(string(buf[:k]))
	if err != nil {
		if r.reported.first(reportKey{kind: reportSymlink, ino: ino}) {
			r.log.Warn("cryptfs: symlink target does not decrypt", "file", where(), "ino", ino, "err", err)
		}
		return "", syscall.EIO
	}
	return t, 0
}

// encryptName returns the on-disk name of plaintext name in a directory
// with IV iv and, for a long name, the full cipher name to store in its
// .name file.
func (r *rootData) encryptName(name string, iv []byte) (cName string, long bool, full string, e syscall.Errno) {
	full, err := r.nt.EncryptName(name, iv)
	if err != nil {
		return "", false, "", errno(err)
	}
	if len(full) > nametransform.NameMax {
		return nametransform.HashLongName(full), true, full, 0
	}
	return full, false, full, 0
}

// Lookup implements fs.NodeLookuper.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fd, iv, e := n.openDir()
	if e != 0 {
		return nil, e
	}
	defer n.closeDir()
	cName, _, _, e := n.r.encryptName(name, iv)
	if e != 0 {
		return nil, e
	}
	return n.childAt(ctx, fd, name, cName, out)
}

// childAt stats cName in this directory (open as fd) and returns the node
// for it under plaintext name.
func (n *node) childAt(ctx context.Context, fd int, name, cName string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var x unix.Statx_t
	if e := statAt(fd, cName, &x); e != 0 {
		return nil, e
	}
	return n.newChild(ctx, fd, name, cName, &x, out), 0
}

func (n *node) newChild(ctx context.Context, fd int, name, cName string, x *unix.Statx_t, out *fuse.EntryOut) *fs.Inode {
	ch := n.r.newNode()
	ch.cnParent, ch.cnName, ch.cnCName = n, name, cName
	n.r.plainAttr(&out.Attr, x, fd, cName, func() string { return n.childPath(name) })
	return n.NewInode(ctx, ch, n.r.stableAttr(x))
}

// Getattr implements fs.NodeGetattrer. go-fuse passes an open handle of
// the file when there is one, which also serves files unlinked while open.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var x unix.Statx_t
	if fh, ok := f.(*fileHandle); ok {
		if e := statAt(fh.fd, "", &x); e != 0 {
			return e
		}
		n.r.plainAttr(&out.Attr, &x, -1, "", n.plainPath)
		return 0
	}
	if n == n.r.root {
		if e := statAt(n.r.rootFd, "", &x); e != 0 {
			return e
		}
		n.r.fillAttr(&out.Attr, &x)
		return 0
	}
	p, pfd, cName, e := n.locate()
	if e != 0 {
		return e
	}
	defer p.closeDir()
	if e := statAt(pfd, cName, &x); e != 0 {
		return e
	}
	n.r.plainAttr(&out.Attr, &x, pfd, cName, n.plainPath)
	return 0
}

// Setattr implements fs.NodeSetattrer: chmod, chown, truncate, utimens.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	fh, _ := f.(*fileHandle)
	var (
		pfd   = -1
		cName string
	)
	if n == n.r.root {
		pfd = n.r.rootFd
	} else {
		p, fd, c, e := n.locate()
		if e != 0 && fh == nil {
			return e
		}
		if e == 0 {
			defer p.closeDir()
			pfd, cName = fd, c
		}
	}
	// Operations on the node itself: through the open handle if there is
	// one, else through the parent without following a symlink.
	selfFd, selfName := pfd, cName
	if fh != nil {
		selfFd, selfName = fh.fd, ""
	}

	if mode, ok := in.GetMode(); ok {
		if e := chmodAt(selfFd, selfName, mode); e != 0 {
			return e
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		flags := unix.AT_SYMLINK_NOFOLLOW
		if selfName == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		if err := unix.Fchownat(selfFd, selfName, u, g, flags); err != nil {
			return errno(err)
		}
	}
	if size, ok := in.GetSize(); ok {
		if e := n.truncatePath(fh, pfd, cName, size); e != 0 {
			return e
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0].Nsec = unix.UTIME_NOW
			} else {
				ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1].Nsec = unix.UTIME_NOW
			} else {
				ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			}
		}
		flags := unix.AT_SYMLINK_NOFOLLOW
		if selfName == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		if err := unix.UtimesNanoAt(selfFd, selfName, ts[:], flags); err != nil {
			return errno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// chmodAt changes the mode of name in dirfd (or of dirfd itself for an
// empty name) without following a symlink.
func chmodAt(dirfd int, name string, mode uint32) syscall.Errno {
	if name == "" {
		return errno(unix.Fchmod(dirfd, mode))
	}
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return errno(err)
	}
	// No fchmodat2: pin the inode with O_PATH, refuse symlinks, and
	// chmod through the descriptor's /proc link.
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errno(err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return syscall.EOPNOTSUPP
	}
	return errno(unix.Chmod(procFdPath(fd), mode))
}

// Readlink implements fs.NodeReadlinker.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	p, pfd, cName, e := n.locate()
	if e != 0 {
		return nil, e
	}
	defer p.closeDir()
	t, e := n.r.readSymlink(pfd, cName, n.StableAttr().Ino, n.plainPath)
	if e != 0 {
		return nil, e
	}
	return []byte(t), 0
}

// Statfs implements fs.NodeStatfser with the cipher file system's figures.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(n.r.rootFd, &st); err != nil {
		return errno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// OnForget implements fs.NodeOnForgetter: a forgotten directory gives back
// its descriptor; the forgotten root (on unmount) closes everything.
func (n *node) OnForget() {
	if n == n.r.root {
		n.r.close()
		return
	}
	if n.IsDir() {
		n.r.fds.drop(n, true)
	}
}
