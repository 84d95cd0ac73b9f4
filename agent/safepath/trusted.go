package safepath

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUntrustedDir is matched (errors.Is) by an *UntrustedDirError.
var ErrUntrustedDir = errors.New("directory may be changed by users other than root")

// UntrustedDirError reports a directory refused by OpenTrustedDir: another
// user owns it, or its mode lets others change what is in it.
type UntrustedDirError struct {
	Path string
	UID  uint32      // owner
	Mode os.FileMode // permission bits
	// Forbid are the permission bits the caller refuses.
	Forbid os.FileMode
}

func (e *UntrustedDirError) Error() string {
	if e.Mode&e.Forbid != 0 {
		return fmt.Sprintf("%s has mode %#o; run chmod %#o %s (it must not be accessible as %#o)",
			e.Path, e.Mode, e.Mode&^e.Forbid, e.Path, e.Forbid)
	}
	return fmt.Sprintf("%s is owned by uid %d, not root; run chown root: %s", e.Path, e.UID, e.Path)
}

func (e *UntrustedDirError) Is(target error) bool { return target == ErrUntrustedDir }

// OpenTrustedDir opens the directory path like OpenDir (no symlink in
// any component) and refuses it unless it is owned by root, or by the
// effective uid of this process, and none of the permission bits in
// forbid is set: 0o022 for a directory others may read (a log
// directory), 0o077 for a private one (a state directory).
//
// Only the directory itself is checked, not its ancestors: the caller
// works relative to the returned descriptor (openat, renameat), so a user
// who can rename an ancestor can at most move the checked directory, not
// put files into it. That is why the descriptor, not the path, must be
// used from here on.
//
// The owner may be the effective uid as well as root because the
// guarantee wanted is "only whoever runs this process can change the
// directory"; for the root daemon the two are the same.
func OpenTrustedDir(path string, forbid os.FileMode) (*os.File, error) {
	d, err := OpenDir(path)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		d.Close()
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	mode := os.FileMode(st.Mode & 0o7777)
	if (st.Uid != 0 && int(st.Uid) != os.Geteuid()) || mode&forbid.Perm() != 0 {
		d.Close()
		return nil, &UntrustedDirError{Path: d.Name(), UID: st.Uid, Mode: mode, Forbid: forbid.Perm()}
	}
	return d, nil
}
