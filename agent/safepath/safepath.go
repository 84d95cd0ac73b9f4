// Package safepath opens the directories root acts on (mount points,
// cipher directories) without following symbolic links, and mounts file
// systems on the directory it opened rather than on its path.
//
// The threat is a check-then-use race on a path: root checks that
// /home/alice/mnt is a directory, and between the check and mount(2),
// which resolves the path again, alice (who owns /home/alice) swaps it
// for a symlink to /etc; root's mount then hides /etc. The same goes for
// files written into a directory another user can rename. So every path
// is walked component by component with O_NOFOLLOW, the directory is
// checked through its descriptor, and mount(2) gets /proc/self/fd/N: the
// kernel mounts on exactly the directory that was checked, and the mount
// table shows that directory's real path.
//
// A symlink anywhere in a path is refused, not resolved: resolving it
// once at check time would trust whoever can write the directory holding
// it, which is the attack. The error names the link; the admin writes
// the real path (in the config, fstab, the command line) instead, which
// is also what the mount table will show.
package safepath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
)

// ErrSymlink is matched (errors.Is) by a *SymlinkError.
var ErrSymlink = errors.New("path has a symbolic link in it")

// SymlinkError reports a path refused because one of its components is a
// symbolic link.
type SymlinkError struct {
	Path string // as given
	Link string // the leading part of Path that is a symlink
}

func (e *SymlinkError) Error() string {
	msg := fmt.Sprintf("%s is a symbolic link, which root does not follow here", e.Link)
	if e.Link != e.Path {
		msg = e.Path + ": " + msg
	}
	if real, err := filepath.EvalSymlinks(e.Path); err == nil && real != e.Path {
		msg += fmt.Sprintf("; give the path without symlinks (%s now)", real)
	}
	return msg
}

func (e *SymlinkError) Is(target error) bool { return target == ErrSymlink }

// ErrMounted is matched (errors.Is) by a *MountedError.
var ErrMounted = errors.New("directory is a mount point already")

// MountedError reports a mount point that has something mounted on it.
type MountedError struct {
	Path   string
	FSType string // from the mount table; empty when not found there
	Source string
}

func (e *MountedError) Error() string {
	if e.FSType == "" {
		return fmt.Sprintf("%s is already a mount point", e.Path)
	}
	return fmt.Sprintf("%s is already a mount point (%s from %s)", e.Path, e.FSType, e.Source)
}

func (e *MountedError) Is(target error) bool { return target == ErrMounted }

// walk opens the parent directory of path (absolute after Abs and Clean)
// as an O_PATH descriptor without following any symlink, and returns it
// with the last component. With create, missing directories on the way
// are made with mode 0755 (less the umask), as mkdir -p does, and
// appended to *created.
func walk(path string, create bool, created *[]string) (parent int, base string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return -1, "", err
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: "/", Err: err}
	}
	parts := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	if abs == "/" {
		return fd, ".", nil
	}
	for i, part := range parts[:len(parts)-1] {
		next, err := openDirAt(fd, part, unix.O_PATH)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, part, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				if err == nil {
					*created = append(*created, "/"+strings.Join(parts[:i+1], "/"))
				}
				next, err = openDirAt(fd, part, unix.O_PATH)
			}
		}
		if err != nil {
			unix.Close(fd)
			return -1, "", pathError(path, "/"+strings.Join(parts[:i+1], "/"), err)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, parts[len(parts)-1], nil
}

// openDirAt opens the directory name in dirfd with O_NOFOLLOW and tells a
// symlink (ELOOP, or ENOTDIR with O_PATH) from other failures.
func openDirAt(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ELOOP || err == unix.ENOTDIR {
			var st unix.Stat_t
			if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return -1, ErrSymlink
			}
		}
		return fd, err
	}
}

// pathError names the component that failed.
func pathError(path, prefix string, err error) error {
	if errors.Is(err, ErrSymlink) {
		return &SymlinkError{Path: path, Link: prefix}
	}
	return &os.PathError{Op: "open", Path: prefix, Err: err}
}

// OpenDir opens the directory path for reading without following a
// symlink in any component. Work in it relative to the descriptor
// (openat, renameat, fsync).
func OpenDir(path string) (*os.File, error) {
	return openDir(path, false, nil)
}

// MkdirAll opens the directory path like OpenDir, creating it and any
// missing parent as mkdir -p does (mode 0755 less the umask; the caller
// sets the mode of the last one through the descriptor). created lists
// the directories made, parents first, for the caller to remove if what
// it does next fails.
func MkdirAll(path string) (d *os.File, created []string, err error) {
	d, err = openDir(path, true, &created)
	return d, created, err
}

func openDir(path string, create bool, created *[]string) (*os.File, error) {
	parent, base, err := walk(path, create, created)
	if err != nil {
		return nil, err
	}
	defer unix.Close(parent)
	fd, err := openDirAt(parent, base, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) && create {
		if err = unix.Mkdirat(parent, base, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
			if err == nil {
				abs, _ := filepath.Abs(path)
				*created = append(*created, abs)
			}
			fd, err = openDirAt(parent, base, unix.O_RDONLY)
		}
	}
	if err != nil {
		return nil, pathError(path, path, err)
	}
	abs, _ := filepath.Abs(path)
	return os.NewFile(uintptr(fd), abs), nil
}

// Mountpoint is a directory opened to be mounted on.
type Mountpoint struct {
	// Path is the absolute path, free of symlinks: what the mount table
	// shows once mounted.
	Path   string
	dir    int // O_PATH descriptor of the directory
	parent int // O_PATH descriptor of its parent
	base   string
}

// OpenMountpoint opens the directory path to mount on, without following
// a symlink in any component, and refuses one that something is mounted
// on already: mounting over it would hide that mount.
func OpenMountpoint(path string) (*Mountpoint, error) {
	parent, base, err := walk(path, false, nil)
	if err != nil {
		return nil, err
	}
	fd, err := openDirAt(parent, base, unix.O_PATH)
	if err != nil {
		unix.Close(parent)
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("mount point %s is not a directory", path)
		}
		return nil, fmt.Errorf("mount point: %w", pathError(path, path, err))
	}
	abs, _ := filepath.Abs(path)
	m := &Mountpoint{Path: abs, dir: fd, parent: parent, base: base}
	var stx unix.Statx_t
	// DONT_SYNC: a dead FUSE mount would fail a fresh getattr, and the
	// mount-root attribute comes from the VFS, not the file system.
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx); err != nil {
		m.Close()
		return nil, fmt.Errorf("mount point %s: %w", path, err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		m.Close()
		me := &MountedError{Path: abs}
		if all, err := mountinfo.Read(); err == nil {
			for _, e := range all {
				if e.Mountpoint == abs {
					me.FSType, me.Source = e.FSType, e.Source // the last one is on top
				}
			}
		}
		return nil, me
	}
	return m, nil
}

// Mount mounts on the directory opened, through /proc/self/fd: the path
// is not looked up again. Arguments are those of mount(2).
func (m *Mountpoint) Mount(source, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, m.fdPath(), fstype, flags, data); err != nil {
		return &os.PathError{Op: "mount", Path: m.Path, Err: err}
	}
	return nil
}

func (m *Mountpoint) fdPath() string { return fmt.Sprintf("/proc/self/fd/%d", m.dir) }

// OpenMounted opens the root of what is mounted on the directory now:
// the descriptor from OpenMountpoint still names the directory beneath.
func (m *Mountpoint) OpenMounted() (*os.File, error) {
	fd, err := openDirAt(m.parent, m.base, unix.O_RDONLY)
	if err != nil {
		return nil, pathError(m.Path, m.Path, err)
	}
	return os.NewFile(uintptr(fd), m.Path), nil
}

// Unmount unmounts what is mounted on the directory, looked up from its
// parent's descriptor without following a symlink.
func (m *Mountpoint) Unmount(flags int) error {
	p := fmt.Sprintf("/proc/self/fd/%d/%s", m.parent, m.base)
	if err := unix.Unmount(p, flags|unix.UMOUNT_NOFOLLOW); err != nil {
		return &os.PathError{Op: "unmount", Path: m.Path, Err: err}
	}
	return nil
}

// Close releases the descriptors; a mount made stays.
func (m *Mountpoint) Close() error {
	if m.dir >= 0 {
		unix.Close(m.dir)
		m.dir = -1
	}
	if m.parent >= 0 {
		unix.Close(m.parent)
		m.parent = -1
	}
	return nil
}
