package share

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultRunDir holds the mount locks and the workers' records. It is
// host-local on purpose: a lock inside the share would be seen by, and
// block, the other servers that mount the same share over the network.
//
// The directory is readable by all, for the records (see Worker); the
// locks and logs in it are root's only.
const DefaultRunDir = "/run/kmsagent/fuse"

// makeRunDir creates runDir, readable by all, in a parent others may
// pass through (but not list).
func makeRunDir(runDir string) error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	// Directories made before the records existed were private.
	if err := os.Chmod(runDir, 0o755); err != nil {
		return err
	}
	parent := filepath.Dir(runDir)
	if fi, err := os.Stat(parent); err == nil && fi.Mode().Perm()&0o001 == 0 {
		return os.Chmod(parent, fi.Mode().Perm()|0o011)
	}
	return nil
}

// Lock is held by the process serving a share, for as long as it serves.
type Lock struct {
	f    *os.File
	path string
}

// LockPath names the lock of the cipher directory dir: by device and inode,
// so two paths to one directory share a lock.
func LockPath(runDir, dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", fmt.Errorf("cipher directory %s: %w", dir, err)
	}
	return filepath.Join(runDir, fmt.Sprintf("%d-%d.lock", st.Dev, st.Ino)), nil
}

// Acquire takes the lock of dir or says who holds it. info (the mount
// point) is written into the lock file for the error message of the next
// caller.
func Acquire(runDir, dir, info string) (*Lock, error) {
	path, err := LockPath(runDir, dir)
	if err != nil {
		return nil, err
	}
	if err := makeRunDir(runDir); err != nil {
		return nil, fmt.Errorf("mount lock: %w", err)
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("mount lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &HeldError{Dir: dir, Holder: strings.TrimSpace(string(holder))}
			}
			return nil, fmt.Errorf("mount lock: %w", err)
		}
		// Release unlinks the file while holding the lock; if that
		// happened between our open and flock, we locked a file nobody
		// else will see: start again.
		if sameFile(f, path) {
			f.Truncate(0)
			f.WriteAt([]byte(fmt.Sprintf("pid %d, mount point %s\n", os.Getpid(), info)), 0)
			return &Lock{f: f, path: path}, nil
		}
		f.Close()
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// Release removes the worker record and the lock file and drops the
// lock; see Acquire for why removing it first is safe.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		os.Remove(recordPath(l.path))
		os.Remove(l.path)
		l.f.Close()
		l.f = nil
	}
}

// Held reports whether some process holds the lock of dir.
func Held(runDir, dir string) (bool, error) {
	path, err := LockPath(runDir, dir)
	if err != nil {
		return false, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return true, nil
	}
	return false, nil
}

// LogPath names the log file of the share in dir, next to its lock.
func LogPath(runDir, dir string) (string, error) {
	path, err := LockPath(runDir, dir)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(path, ".lock") + ".log", nil
}

// OpenLog opens the log file of the share in dir, for workers on hosts
// without syslog.
func OpenLog(runDir, dir string) (*os.File, error) {
	path, err := LogPath(runDir, dir)
	if err != nil {
		return nil, err
	}
	if err := makeRunDir(runDir); err != nil {
		return nil, fmt.Errorf("share log: %w", err)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
}
