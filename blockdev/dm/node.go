package dm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// EnsureNode makes dir/name a block device node for dev (as reported in
// DevInfo.Dev) unless a node or a udev symlink already leads to that
// device. A stale block node for another device is replaced; anything
// else at the path is an error. It reports whether it made the node.
//
// udev normally makes /dev/mapper/<name> as a symlink; in an initramfs
// or a container without udev nothing does, and the device would only
// be reachable as /dev/dm-N.
func EnsureNode(dir, name string, dev uint64) (bool, error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	path := filepath.Join(dir, name)
	want := unix.Mkdev(unix.Major(dev), unix.Minor(dev))
	switch ok, err := nodeIs(path, want); {
	case err == nil && ok:
		return false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("dm: create node directory %s: %w", dir, err)
	}
	// Made under a temporary name and renamed, so the path never points
	// at a half-made node or goes missing while a stale one is replaced.
	tmp := filepath.Join(dir, ".tmp-"+name)
	_ = unix.Unlink(tmp)
	if err := unix.Mknod(tmp, unix.S_IFBLK|0o600, int(want)); err != nil {
		return false, fmt.Errorf("dm: create node %s (%d:%d): %w", path, unix.Major(dev), unix.Minor(dev), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = unix.Unlink(tmp)
		return false, fmt.Errorf("dm: create node %s: %w", path, err)
	}
	return true, nil
}

// nodeIs reports whether path is, or is a symlink to, the block device
// want. A missing path is fs.ErrNotExist; a path that is neither a block
// device nor a symlink is an error; a block node or a symlink for another
// device reports false (a stale node, to be replaced).
func nodeIs(path string, want uint64) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, fs.ErrNotExist
		}
		return false, fmt.Errorf("dm: inspect node %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		return st.Rdev == want, nil
	case unix.S_IFLNK:
		if err := unix.Stat(path, &st); err != nil {
			return false, nil // dangling udev link: replace it
		}
		return st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == want, nil
	default:
		return false, fmt.Errorf("dm: %s exists and is not a device node", path)
	}
}

// RemoveNode removes dir/name if it is a block node for dev. A symlink is
// left to udev, which made it and removes it; a missing node is fine.
func RemoveNode(dir, name string, dev uint64) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("dm: inspect node %s: %w", path, err)
	}
	want := unix.Mkdev(unix.Major(dev), unix.Minor(dev))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != want {
		return nil
	}
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("dm: remove node %s: %w", path, err)
	}
	return nil
}

// PruneNodes removes block nodes in the node directory whose name is not
// a current device-mapper device, such as the node of a device that went
// away through deferred remove. It returns the names removed.
func (c *Control) PruneNodes() ([]string, error) {
	devs, err := c.List()
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(devs))
	for _, d := range devs {
		live[d.Name] = true
	}
	entries, err := os.ReadDir(c.nodeDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("dm: prune nodes: %w", err)
	}
	var pruned []string
	for _, e := range entries {
		if e.Type()&fs.ModeDevice == 0 || e.Type()&fs.ModeCharDevice != 0 || live[e.Name()] {
			continue
		}
		if err := unix.Unlink(filepath.Join(c.nodeDir, e.Name())); err != nil && !errors.Is(err, unix.ENOENT) {
			return pruned, fmt.Errorf("dm: prune node %s: %w", filepath.Join(c.nodeDir, e.Name()), err)
		}
		pruned = append(pruned, e.Name())
	}
	return pruned, nil
}
