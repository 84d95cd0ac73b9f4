package cryptfs

import (
	"fmt"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Subtype is the FUSE subtype of our mounts: they show as fuse.kmsagent
// in /proc/mounts.
const Subtype = "kmsagent"

// maxWrite is the largest read or write request we ask the kernel for.
const maxWrite = fuse.MAX_KERNEL_WRITE

// MountOptions tune Mount. The zero value is a private read-write mount
// with gocryptfs's cache timeouts (one second for entries, attributes and
// negative lookups).
type MountOptions struct {
	// FsName is the source shown in the mount table; default the cipher
	// directory.
	FsName string
	// AllowOther lets users other than the mounting one in. Permissions
	// are then checked by the kernel against the file modes
	// (default_permissions is set with it). Without AllowOther only the
	// mounting user gets in, and the cipher files, which carry the same
	// modes, are accessed with the server's rights, which are that
	// user's, as in gocryptfs. There default_permissions would cost a
	// GETATTR of the parent directory after every create and unlink
	// (the kernel invalidates the directory's attributes and refreshes
	// them for the next check); Options may still ask for it.
	AllowOther bool
	// ReadOnly mounts read-only.
	ReadOnly bool
	// Options are further -o options passed as they are (nosuid, nodev,
	// noexec, ...).
	Options []string
	// Timeouts of the kernel's caches; nil means one second, a pointer
	// to zero disables the cache.
	EntryTimeout, AttrTimeout, NegativeTimeout *time.Duration
	// Debug logs every FUSE request (file names included).
	Debug bool
}

// Mount mounts root (from NewRoot) on mountpoint and serves it in the
// background. Unmount with the returned server's Unmount (or umount(8));
// server.Wait returns once the mount is gone, after which the root has
// closed all its descriptors.
func Mount(mountpoint string, root fs.InodeEmbedder, mo MountOptions) (*fuse.Server, error) {
	sec := time.Second
	pick := func(d *time.Duration) *time.Duration {
		if d == nil {
			return &sec
		}
		return d
	}
	fsName := mo.FsName
	if n, ok := root.(*node); ok && fsName == "" {
		fsName = n.r.cipherDir
	}
	var options []string
	if mo.AllowOther {
		options = append(options, "default_permissions")
	}
	options = append(options, mo.Options...)
	if mo.ReadOnly {
		options = append(options, "ro")
	}
	opts := &fs.Options{
		EntryTimeout:    pick(mo.EntryTimeout),
		AttrTimeout:     pick(mo.AttrTimeout),
		NegativeTimeout: pick(mo.NegativeTimeout),
		// Show modes as they are, 0000 included.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:     fsName,
			Name:       Subtype,
			AllowOther: mo.AllowOther,
			Options:    options,
			MaxWrite:   maxWrite,
			// Only user.* xattrs exist here; answering the kernel's
			// security.capability query on every write in go-fuse
			// saves a round trip per write.
			IgnoreSecurityLabels: true,
			// As root, mount(2) directly; fusermount3 otherwise.
			DirectMount: true,
			Debug:       mo.Debug,
		},
	}
	server, err := fs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, fmt.Errorf("cryptfs: mount %s on %s: %w", fsName, mountpoint, err)
	}
	setReadAhead(mountpoint, readAheadKB)
	return server, nil
}

// readAheadKB is the kernel read-ahead we ask for: one maximal request.
// The kernel's default for a FUSE mount is 128 KiB, so a sequential read
// costs a round trip and a cipher file read per 128 KiB; with 1 MiB the
// same reads take about half the time here.
const readAheadKB = maxWrite / 1024

// setReadAhead raises the read-ahead of the mount's backing device info,
// which FUSE can only lower through INIT. Writing it needs root; without,
// the kernel default stays, which is only slower.
func setReadAhead(mountpoint string, kb int) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_, _ = unix.Write(fd, []byte(strconv.Itoa(kb)))
}
