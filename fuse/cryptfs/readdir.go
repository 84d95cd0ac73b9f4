package cryptfs

import (
	"context"
	"encoding/binary"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/nametransform"
)

// dirHandle is an open directory. It reads and decrypts the whole
// directory on the first read (and again after a rewind) and answers the
// lookups of READDIRPLUS from what it read, so a listing costs one stat
// per entry and no name is encrypted again.
type dirHandle struct {
	n       *node
	fd      int // own descriptor: getdents keeps a position
	iv      []byte
	entries []dirEntry
	pos     int
	loaded  bool
	cur     fuse.DirEntry
}

type dirEntry struct {
	name  string // plaintext
	cName string // on disk
	ino   uint64
	mode  uint32 // file type bits only
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

// OpendirHandle implements fs.NodeOpendirHandler.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, iv, e := n.openDir()
	if e != 0 {
		return nil, 0, e
	}
	defer n.closeDir()
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, errno(err)
	}
	return &dirHandle{n: n, fd: dfd, iv: iv}, 0, 0
}

// Readdirent implements fs.FileReaddirenter.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !h.loaded {
		if e := h.load(); e != 0 {
			return nil, e
		}
	}
	if h.pos >= len(h.entries) {
		return nil, 0
	}
	e := &h.entries[h.pos]
	h.pos++
	h.cur = fuse.DirEntry{Name: e.name, Ino: e.ino, Mode: e.mode, Off: uint64(h.pos)}
	return &h.cur, 0
}

// Lookup implements fs.FileLookuper for READDIRPLUS: name is the entry
// Readdirent just returned.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if h.pos > 0 && h.pos <= len(h.entries) && h.entries[h.pos-1].name == name {
		return h.n.childAt(ctx, h.fd, name, h.entries[h.pos-1].cName, out)
	}
	return h.n.Lookup(ctx, name, out)
}

// Seekdir implements fs.FileSeekdirer. Offsets are entry indexes; a
// rewind rereads the directory.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		h.loaded = false
		h.pos = 0
		return 0
	}
	if !h.loaded {
		if e := h.load(); e != 0 {
			return e
		}
	}
	h.pos = int(min(off, uint64(len(h.entries))))
	return 0
}

// Releasedir implements fs.FileReleasedirer.
func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	unix.Close(h.fd)
	h.fd = -1
}

// Fsyncdir implements fs.FileFsyncdirer.
func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if e := h.n.syncMeta(); e != 0 {
		return e
	}
	return errno(unix.Fsync(h.fd))
}

// hiddenNames are files a cipher directory may legitimately hold that are
// not encrypted names; they are hidden without a log line.
var hiddenNames = map[string]bool{
	"gocryptfs.conf": true,
	"kmsagent.json":  true,
	"lost+found":     true,
}

func (h *dirHandle) load() syscall.Errno {
	if _, err := unix.Seek(h.fd, 0, 0); err != nil {
		return errno(err)
	}
	r := h.n.r
	h.entries = h.entries[:0]
	h.pos = 0
	h.entries = append(h.entries,
		dirEntry{name: ".", ino: h.n.StableAttr().Ino, mode: syscall.S_IFDIR},
		dirEntry{name: "..", ino: 1, mode: syscall.S_IFDIR})
	buf := make([]byte, 32<<10)
	for {
		k, err := unix.Getdents(h.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return errno(err)
		}
		if k <= 0 {
			break
		}
		walkDirents(buf[:k], func(raw []byte, ino uint64, typ uint8) bool {
			cName := string(raw)
			var plain string
			switch nametransform.NameType(cName) {
			case nametransform.NameDirIV, nametransform.NameLongFile:
				return true
			case nametransform.NameOther:
				if cName != "." && cName != ".." && !hiddenNames[cName] {
					h.reportName(cName, nil)
				}
				return true
			case nametransform.NameLongContent:
				full, err := nametransform.ReadLongNameAt(h.fd, cName)
				if err != nil {
					h.reportName(cName, err)
					return true
				}
				if plain, err = r.nt.DecryptName(full, h.iv); err != nil {
					h.reportName(cName, err)
					return true
				}
			default:
				var err error
				if plain, err = r.nt.DecryptName(cName, h.iv); err != nil {
					h.reportName(cName, err)
					return true
				}
			}
			mode := uint32(typ) << 12
			if typ == unix.DT_UNKNOWN {
				var x unix.Statx_t
				if statAt(h.fd, cName, &x) != 0 {
					return true
				}
				mode = uint32(x.Mode) & syscall.S_IFMT
			}
			h.entries = append(h.entries, dirEntry{name: plain, cName: cName, ino: ino, mode: mode})
			return true
		})
	}
	h.loaded = true
	return 0
}

func (h *dirHandle) reportName(cName string, err error) {
	r := h.n.r
	if !r.reported.first(reportKey{kind: reportName, ino: h.n.StableAttr().Ino, name: cName}) {
		return
	}
	msg := "not an encrypted name"
	if err != nil {
		msg = err.Error()
	}
	r.log.Warn("cryptfs: hiding invalid entry in cipher directory", "dir", h.n.plainPath(), "cipher_name", cName, "reason", msg)
}

// walkDirents calls fn for each linux_dirent64 record in buf until fn
// returns false. name aliases buf.
func walkDirents(buf []byte, fn func(name []byte, ino uint64, typ uint8) bool) {
	for len(buf) >= 19 {
		ino := binary.NativeEndian.Uint64(buf[0:8])
		reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
		if reclen < 19 || reclen > len(buf) {
			return
		}
		typ := buf[18]
		name := buf[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if !fn(name, ino, typ) {
			return
		}
		buf = buf[reclen:]
	}
}
