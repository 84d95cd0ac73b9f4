package cryptfs

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/nametransform"
)

// Extended attributes follow gocryptfs 2.3, which decides per name:
//
//   - The POSIX ACLs, system.posix_acl_access and system.posix_acl_default,
//     are stored as they are on the cipher file. The kernel must be able
//     to read them: the cipher directory's file system applies a default
//     ACL when we create an entry and updates the mode when an access ACL
//     is set, and the FUSE mount reads them back for its own permission
//     checks (see Mount). An ACL names only numeric ids and permissions.
//   - Every other name, of any namespace (user, trusted, security,
//     system), is encrypted whole into "user.gocryptfs.<name cipher>" and
//     its value is sealed like a content block (package nametransform and
//     contentenc). So a share can be an overlayfs upper directory
//     (trusted.overlay.*) and hold file capabilities, and the cipher
//     directory needs only user xattrs, which any file system with xattrs
//     offers to any user. The kernel still checks the plaintext name's
//     namespace on the mount: trusted.* needs CAP_SYS_ADMIN,
//     security.capability CAP_SETFCAP, and user.* exists only on regular
//     files and directories.
//   - security.capability is served like any other name, on every mount.
//     gocryptfs answers EOPNOTSUPP for it unless mounted -suid, because
//     the kernel asks for it before every write; but then a write does not
//     drop a capability either, and a binary changed on a nosuid mount
//     keeps its capability for the next suid mount. Here each node
//     remembers instead that its cipher file has none (capCache), so the
//     question costs no system call after the first.
//   - A file without an SELinux label answers a read of security.selinux
//     with EOPNOTSUPP instead of ENODATA, on hosts where SELinux is off
//     (see labelsUnsupported). ls -l asks for the label of every file,
//     and no kernel cache spares the round trip, but it stops asking
//     for a whole file system after one EOPNOTSUPP: a cold ls -lR then
//     costs one request per file instead of two. A label that is stored
//     (set on a host without SELinux, or copied from gocryptfs) still
//     reads, lists and copies as any other name (ls -Z, which stops
//     asking too, then shows "?" for a labelled file listed after an
//     unlabelled one: on such a host labels enforce nothing). Where
//     SELinux is on, it answers reads of the label itself and never asks
//     us, except for its own labelling from xattrs, which needs ENODATA.
//   - Stored names that are neither ACLs nor ours (an SELinux label of the
//     cipher file, for instance) are hidden, and so are our names that
//     decrypt to an ACL name: gocryptfs 1.8 stored ACLs encrypted, and
//     such an ACL would never be enforced.
//
// Listing hides trusted.* names from callers other than root, as local
// file systems do: the kernel would refuse to read them for such a caller
// with ENODATA, which makes tools that list and then read fail.

const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
	xattrCapability = "security.capability"
	xattrSELinux    = "security.selinux"
	xattrTrusted    = "trusted."
)

// capCache remembers that a node's cipher file has no
// security.capability. Only this mount changes the cipher directory while
// it is mounted, so that stays true until we set the name ourselves. The
// low bit means "known absent"; the rest counts our changes of the name,
// so that a read that raced with a set cannot record a stale absence: the
// set bumps the count after its write, and the read records absence only
// if the count is still the one it saw before reading.
type capCache struct{ v atomic.Uint64 }

// absent reports a known absence, and the state to pass to markAbsent.
func (c *capCache) absent() (bool, uint64) {
	v := c.v.Load()
	return v&1 != 0, v
}

// markAbsent records an absence read in state seen.
func (c *capCache) markAbsent(seen uint64) { c.v.CompareAndSwap(seen, seen|1) }

// changed forgets the absence; call it after setting or removing the name.
func (c *capCache) changed() {
	for {
		old := c.v.Load()
		if c.v.CompareAndSwap(old, old&^1+2) {
			return
		}
	}
}

// labelsUnsupported reports whether a missing SELinux label may be
// answered with EOPNOTSUPP: SELinux is not enabled on this host, which is
// when it registers no selinuxfs. When in doubt it says no, which is the
// answer of a local file system.
func labelsUnsupported() bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(strings.TrimPrefix(line, "nodev")) == "selinuxfs" {
			return false
		}
	}
	return true
}

// isACL reports whether name is a POSIX ACL, which is stored as it is.
func isACL(name string) bool { return name == xattrACLAccess || name == xattrACLDefault }

// xattrSizeMax is the kernel's limit on an xattr value (XATTR_SIZE_MAX) and
// on a listing.
const xattrSizeMax = 64 << 10

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

// readAll reads a whole value or listing with fn, which has the calling
// convention of getxattr(2): a nil buffer asks for the size. A value that
// grows between the two calls is read again.
func readAll(fn func([]byte) (int, error)) ([]byte, error) {
	for {
		k, err := fn(nil)
		if err != nil {
			return nil, err
		}
		if k == 0 {
			return []byte{}, nil
		}
		buf := make([]byte, min(k, xattrSizeMax))
		k, err = fn(buf)
		if err == unix.ERANGE && len(buf) < xattrSizeMax {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:k], nil
	}
}

// copyOut answers a getxattr or listxattr request for value: the size for
// an empty dest, ERANGE for one too small.
func copyOut(dest, value []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(value)), 0
	}
	if len(value) > len(dest) {
		return uint32(len(value)), syscall.ERANGE
	}
	return uint32(copy(dest, value)), 0
}

// storedName maps a plaintext xattr name to the name in the cipher
// directory.
func (n *node) storedName(attr string) (string, syscall.Errno) {
	if isACL(attr) {
		return attr, 0
	}
	c, err := n.r.nt.EncryptXattrName(attr)
	if err != nil {
		return "", errno(err)
	}
	return c, 0
}

// Getxattr implements fs.NodeGetxattrer.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var capSeen uint64
	if attr == xattrCapability {
		var absent bool
		if absent, capSeen = n.caps.absent(); absent {
			return 0, syscall.ENODATA
		}
	}
	cAttr, e := n.storedName(attr)
	if e != 0 {
		return 0, e
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return 0, e
	}
	defer release()
	stored, err := readAll(func(b []byte) (int, error) { return t.get(cAttr, b) })
	if err == unix.ENODATA && attr == xattrCapability {
		n.caps.markAbsent(capSeen)
	}
	if err == unix.ENODATA && attr == xattrSELinux && n.r.noLabels {
		return 0, syscall.EOPNOTSUPP
	}
	if err != nil {
		return 0, errno(err)
	}
	if isACL(attr) {
		return copyOut(dest, stored)
	}
	plain, err := n.r.ce.DecryptXattrValue(stored)
	if err != nil {
		ino := n.StableAttr().Ino
		if n.r.reported.first(reportKey{kind: reportXattr, ino: ino, name: attr}) {
			n.r.log.Warn("cryptfs: xattr value does not decrypt", "file", n.plainPath(), "ino", ino, "err", err)
		}
		return 0, syscall.EIO
	}
	return copyOut(dest, plain)
}

// Setxattr implements fs.NodeSetxattrer. The flags (XATTR_CREATE,
// XATTR_REPLACE) are passed on: a name encrypts to one stored name, so
// the cipher file system answers them for us.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	cAttr, e := n.storedName(attr)
	if e != 0 {
		return e
	}
	if !isACL(attr) {
		data = n.r.ce.EncryptXattrValue(data)
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return e
	}
	defer release()
	if attr == xattrCapability {
		defer n.caps.changed() // after the write, see capCache
	}
	set := func() error { return t.set(cAttr, data, int(flags)) }
	// Setting an access ACL clears the set-group-ID bit unless the
	// caller is in the file's group or privileged; the cipher file
	// system decides that by who asks, so a server running as root asks
	// as the caller, as gocryptfs does.
	if caller, ok := fuse.FromContext(ctx); ok && isACL(attr) && n.r.chown && caller.Uid != 0 {
		return errno(asCaller(caller, set))
	}
	return errno(set())
}

// Removexattr implements fs.NodeRemovexattrer.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.r.ro {
		return syscall.EROFS
	}
	cAttr, e := n.storedName(attr)
	if e != 0 {
		return e
	}
	t, release, e := n.xattrTarget()
	if e != 0 {
		return e
	}
	defer release()
	if attr == xattrCapability {
		defer n.caps.changed()
	}
	return errno(t.remove(cAttr))
}

// Listxattr implements fs.NodeListxattrer.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	t, release, e := n.xattrTarget()
	if e != 0 {
		return 0, e
	}
	defer release()
	raw, err := readAll(t.list)
	if err != nil {
		return 0, errno(err)
	}
	privileged := false
	if caller, ok := fuse.FromContext(ctx); ok && caller.Uid == 0 {
		privileged = true
	}
	var out []byte
	for name := range bytes.SplitSeq(raw, []byte{0}) {
		plain := string(name)
		switch {
		case isACL(plain):
		case bytes.HasPrefix(name, []byte(nametransform.XattrStorePrefix)):
			var err error
			if plain, err = n.r.nt.DecryptXattrName(plain); err != nil {
				ino := n.StableAttr().Ino
				if n.r.reported.first(reportKey{kind: reportXattr, ino: ino, name: string(name)}) {
					n.r.log.Warn("cryptfs: xattr name does not decrypt", "file", n.plainPath(), "ino", ino, "stored", string(name), "err", err)
				}
				continue
			}
			if isACL(plain) || strings.HasPrefix(plain, xattrTrusted) && !privileged {
				continue
			}
		default:
			continue
		}
		out = append(out, plain...)
		out = append(out, 0)
	}
	return copyOut(dest, out)
}
