package cryptfs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The mount negotiates FUSE_HANDLE_KILLPRIV_V2: clearing the set-user-ID
// and set-group-ID bits when an unprivileged caller writes or truncates a
// file is left to us. Without it the kernel cannot trust its cached mode,
// so it asks whether the file has security.capability before every
// write(2) (a GETXATTR round trip per write: half of all requests of 4 KiB
// random writes) and refreshes the attributes before every chown. With it
// the kernel marks an inode found without those bits and capabilities
// (S_NOSEC) and stops asking until the mode or security xattrs change; it
// still removes security.capability itself when it finds one.
//
// What we take over, as a local file system does it: the kernel flags a
// write (FUSE_WRITE_KILL_SUIDGID), a truncation (FATTR_KILL_SUIDGID) and
// an open with O_TRUNC (FUSE_OPEN_KILL_SUIDGID) by a caller without
// CAP_FSETID, and we then clear set-user-ID, and set-group-ID if the file
// is group-executable. The cipher file is written by this process, which
// runs as root and so would keep the bits itself. A chown carries the flag
// too; the cipher file system clears the bits on our own chown of the
// cipher file, as for any chown of a regular file.
//
// go-fuse's node API does not pass these flags on, so killPrivFS sees
// them on the raw requests and clears the bits through the node API
// (GETATTR, then SETATTR of the mode) before the request is served.
type killPrivFS struct {
	fuse.RawFileSystem
}

// killMode returns mode without the bits a write by an unprivileged
// caller clears.
func killMode(mode uint32) uint32 {
	mode &^= unix.S_ISUID
	if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		mode &^= unix.S_ISGID
	}
	return mode
}

// killSUIDGID clears the bits of node hdr.NodeId, through open file fh
// if it is not 0.
func (k killPrivFS) killSUIDGID(cancel <-chan struct{}, hdr fuse.InHeader, fh uint64) fuse.Status {
	gin := fuse.GetAttrIn{InHeader: hdr, Fh_: fh}
	if fh != 0 {
		gin.Flags_ = fuse.FUSE_GETATTR_FH
	}
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &gin, &attr); !st.Ok() {
		return st
	}
	if attr.Mode&unix.S_IFMT != unix.S_IFREG {
		return fuse.OK
	}
	mode := killMode(attr.Mode)
	if mode == attr.Mode {
		return fuse.OK
	}
	sin := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr, Valid: fuse.FATTR_MODE, Mode: mode}}
	if fh != 0 {
		sin.Valid |= fuse.FATTR_FH
		sin.Fh = fh
	}
	return k.RawFileSystem.SetAttr(cancel, &sin, &attr)
}

func (k killPrivFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.killSUIDGID(cancel, in.InHeader, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

func (k killPrivFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.killSUIDGID(cancel, in.InHeader, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

// SetAttr clears the bits in the same request: a truncation (or chown)
// flagged by the kernel that does not set the mode itself gets the
// current mode without them.
func (k killPrivFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		gin := fuse.GetAttrIn{InHeader: in.InHeader}
		if fh, ok := in.GetFh(); ok {
			gin.Flags_, gin.Fh_ = fuse.FUSE_GETATTR_FH, fh
		}
		var attr fuse.AttrOut
		if st := k.RawFileSystem.GetAttr(cancel, &gin, &attr); !st.Ok() {
			return st
		}
		if attr.Mode&unix.S_IFMT == unix.S_IFREG {
			if mode := killMode(attr.Mode); mode != attr.Mode {
				in.Valid |= fuse.FATTR_MODE
				in.Mode = mode
			}
		}
	}
	return k.RawFileSystem.SetAttr(cancel, in, out)
}

// Open clears the bits after an O_TRUNC open has truncated the file.
func (k killPrivFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st.Ok() && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if st = k.killSUIDGID(cancel, in.InHeader, out.Fh); !st.Ok() {
			k.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh, Flags: in.Flags})
		}
	}
	return st
}

// Create does the same when O_CREAT|O_TRUNC met an existing file.
func (k killPrivFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := k.RawFileSystem.Create(cancel, in, name, out)
	if st.Ok() && in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		hdr := in.InHeader
		hdr.NodeId = out.NodeId
		if st = k.killSUIDGID(cancel, hdr, out.Fh); !st.Ok() {
			// The kernel sees a failed create and will not release the
			// handle; its node stays known to go-fuse until unmount.
			k.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: hdr, Fh: out.Fh, Flags: in.Flags})
		}
	}
	return st
}

// Fallocate clears the bits before a fallocate(2) by anyone but root. The
// kernel flags nothing on FUSE_FALLOCATE and, with killpriv v2, sends no
// mode change either, while a local file system clears them when a
// caller without CAP_FSETID allocates; the request only tells us the
// caller's uid, so root stands for CAP_FSETID.
func (k killPrivFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if in.Caller.Uid != 0 {
		if st := k.killSUIDGID(cancel, in.InHeader, in.Fh); !st.Ok() {
			return st
		}
	}
	return k.RawFileSystem.Fallocate(cancel, in)
}
