package cryptfs

import (
	"fmt"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
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
	// (default_permissions is always set).
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
	options := append([]string{"default_permissions"}, mo.Options...)
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
	return server, nil
}
