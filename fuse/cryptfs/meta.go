package cryptfs

import (
	"crypto/rand"
	"syscall"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/nametransform"
)

// The gocryptfs.diriv of a new directory and the .name file of a new long
// name are written here without an fsync each (nametransform's writers
// fsync every file, which costs a journal commit per mkdir). Like the
// data of any new file, they become durable when the application asks:
// an fsync of the directory, or of a file in it, first fsyncs the
// metadata files of that directory still pending. Until then a crash can
// lose them just as it can lose the entries themselves.

const maxUnsynced = 4096

// writeMetaFile creates name in dirfd holding data, exclusively, and
// removes it again on failure.
func writeMetaFile(dirfd int, name string, data []byte, perm uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return err
	}
	k, err := unix.Write(fd, data)
	if err == nil && k != len(data) {
		err = syscall.EIO
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		_ = unix.Unlinkat(dirfd, name, 0)
	}
	return err
}

func randomIV() []byte {
	iv := make([]byte, nametransform.DirIVLen)
	_, _ = rand.Read(iv) // never fails on Linux
	return iv
}

// writeLongName stores the full cipher name of long name hashName in
// directory n (open as dirfd). It fails with EEXIST if the file exists.
func (n *node) writeLongName(dirfd int, hashName, full string) error {
	name := hashName + nametransform.LongNameSuffix
	if err := writeMetaFile(dirfd, name, []byte(full), nametransform.NamePerm); err != nil {
		return err
	}
	n.addUnsynced(name)
	return nil
}

// addUnsynced records a metadata file of directory n written without
// fsync.
func (n *node) addUnsynced(name string) {
	n.metaMu.Lock()
	if n.unsynced == nil {
		n.unsynced = make(map[string]struct{})
	}
	n.unsynced[name] = struct{}{}
	full := len(n.unsynced) >= maxUnsynced
	n.metaMu.Unlock()
	if full {
		// Bound the memory: make them durable now.
		_ = n.syncMeta()
	}
}

// syncMeta fsyncs the pending metadata files of directory n.
func (n *node) syncMeta() syscall.Errno {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if len(n.unsynced) == 0 {
		return 0
	}
	dirfd, e := n.r.fds.acquire(n)
	if e != 0 {
		return e
	}
	defer n.r.fds.release(n)
	for name := range n.unsynced {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			delete(n.unsynced, name) // removed meanwhile
			continue
		}
		if err != nil {
			return errno(err)
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return errno(err)
		}
		delete(n.unsynced, name)
	}
	return 0
}
