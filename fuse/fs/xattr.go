package cryptfs

import (
	"bytes"
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/nametransform"
)

// Extended attributes are stored the gocryptfs way: the whole plaintext
// name ("user.foo") is encrypted into "user.gocryptfs.<cipher>", the value
// is sealed like a content block. Only the user namespace is offered: the
// others carry kernel semantics (security labels, ACLs, trusted) that an
// encrypted copy cannot honour, so they read as absent and cannot be set.

const xattrUserPrefix = "user."

// xattrTarget is where the cipher xattrs of a node live: the root by its
// descriptor, anything else by a /proc path through its parent's
// descriptor, which does not follow a symlink in the last component.
type xattrTarget struct {
	fd   int
	path string
}

// xattrTarget resolves n; release must be called unless it fails.
func (n *node) xattrTarget() (t xattrTarget, release func(), e syscall.Errno) {
	if n == n.r.root {
		return xattrTarget{fd: n.r.rootFd}, func() {}, 0
	}
	p, pfd, cName, e := n.locate()
	if e != 0 {
		return t, nil, e
	}
	return xattrTarget{fd: -1, path: procFdPath(pfd) + "/" + cName}, p.closeDir, 0
}

func (t xattrTarget) get(name string, buf []byte) (int, error) {
	if t.path == "" {
		return unix.Fgetxattr(t.fd, name, buf)
	}
	return unix.Lgetxattr(t.path, name, buf)
}

func (t xattrTarget) set(name string, data []byte, flags int) error {
	if t.path == "" {
		return unix.Fsetxattr(t.fd, name, data, flags)
	}
	return unix.Lsetxattr(t.path, name, data, flags)
}

func (t xattrTarget) remove(name string) error {
	if t.path == "" {
		return unix.Fremovexattr(t.fd, name)
	}
	return unix.Lremovexattr(t.path, name)
}

func (t xattrTarget) list(buf []byte) (int, error) {
	if t.path == "" {
		return unix.Flistxattr(t.fd, buf)
	}
	return unix.Llistxattr(t.path, buf)
}

// Getxattr implements fs.NodeGetxattrer.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !strings.HasPrefix(attr, xattrUserPrefix) {
		return 0, fs.ENOATTR
	}
	cAttr, err := n.r.nt.EncryptXattrName(attr)
	if err != nil {
		return 0, errno(err)
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return 0, e
	}
	defer release()
	if len(dest) == 0 {
		k, err := t.get(cAttr, nil)
		if err != nil {
			return 0, errno(err)
		}
		return uint32(max(k-contentenc.Overhead, 0)), 0
	}
	buf := make([]byte, len(dest)+contentenc.Overhead)
	k, err := t.get(cAttr, buf)
	if err != nil {
		return 0, errno(err)
	}
	plain, err := n.r.ce.DecryptXattrValue(buf[:k])
	if err != nil {
		ino := n.StableAttr().Ino
		if n.r.reported.first(reportKey{kind: reportXattr, ino: ino, name: attr}) {
			n.r.log.Warn("cryptfs: xattr value does not decrypt", "file", n.plainPath(), "ino", ino, "err", err)
		}
		return 0, syscall.EIO
	}
	if len(plain) > len(dest) {
		return uint32(len(plain)), syscall.ERANGE
	}
	return uint32(copy(dest, plain)), 0
}

// Setxattr implements fs.NodeSetxattrer.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	if !strings.HasPrefix(attr, xattrUserPrefix) {
		return syscall.EOPNOTSUPP
	}
	cAttr, err := n.r.nt.EncryptXattrName(attr)
	if err != nil {
		return errno(err)
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return e
	}
	defer release()
	return errno(t.set(cAttr, n.r.ce.EncryptXattrValue(data), int(flags)))
}

// Removexattr implements fs.NodeRemovexattrer.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	if !strings.HasPrefix(attr, xattrUserPrefix) {
		return fs.ENOATTR
	}
	cAttr, err := n.r.nt.EncryptXattrName(attr)
	if err != nil {
		return errno(err)
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return e
	}
	defer release()
	return errno(t.remove(cAttr))
}

// Listxattr implements fs.NodeListxattrer. Stored names that are not ours
// or do not decrypt are left out.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	t, release, e := n.xattrTarget()
	if e != 0 {
		return 0, e
	}
	defer release()
	var raw []byte
	for {
		k, err := t.list(nil)
		if err != nil {
			return 0, errno(err)
		}
		if k == 0 {
			return 0, 0
		}
		raw = make([]byte, k)
		k, err = t.list(raw)
		if err == unix.ERANGE {
			continue // grew meanwhile
		}
		if err != nil {
			return 0, errno(err)
		}
		raw = raw[:k]
		break
	}
	var out []byte
	for name := range bytes.SplitSeq(raw, []byte{0}) {
		if !bytes.HasPrefix(name, []byte(nametransform.XattrStorePrefix)) {
			continue
		}
		plain, err := n.r.nt.DecryptXattrName(string(name))
		if err != nil {
			continue
		}
		out = append(out, plain...)
		out = append(out, 0)
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(out) > len(dest) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}
