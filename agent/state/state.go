// Package state keeps the daemon's state file: one small JSON document
// that must survive the daemon being killed at any moment, and that only
// one daemon may own at a time.
//
// # Format
//
// The package is generic: the daemon defines the document (a struct T)
// and its schema version, and the file wraps it as
//
//	{"version": 3, "state": {...}}
//
// indented, so that an admin can read it. Decoding is strict (unknown
// fields, trailing data and a missing version are errors): a file this
// build does not fully understand is not half-trusted. Load reports such
// a file as a *CorruptError, and one written by a newer build as a
// *VersionError; in both cases the daemon rebuilds its view from the
// kernel (mount table, device-mapper, running workers), which is the
// truth the state file only caches, and the next Save replaces the file.
// An older version goes through Options.Upgrade when set.
//
// # Atomic replacement
//
// Save writes the whole document to a new temporary file in the same
// directory (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600), fsyncs it, renames it
// over the state file and fsyncs the directory. rename(2) replaces the
// name in one step, so a crash at any point leaves the old file or the
// new one, never a mix; the fsync before the rename makes the new
// contents durable before the name points at them, and the fsync after
// makes the rename itself durable. A crash before the rename leaves a
// temporary file behind; Open removes those, under the lock. Tests stop
// Save at each step, and kill a saving process at random points.
//
// # Ownership
//
// The state directory must be owned by root and have mode 0700 (no bits
// for group or others), and no component of its path may be a symlink
// (safepath.OpenTrustedDir): whoever could write there could feed the
// daemon a state that makes it act on the wrong devices. All work is
// done relative to the directory's descriptor.
//
// Two daemons on one state directory would each believe they own the
// volumes. Open takes an exclusive flock(2) on a lock file in the
// directory and holds it until Close; the kernel drops it when the
// process dies, however it dies, so there is no stale lock to clean up.
// The holder writes its pid into the lock file, and a second Open gets a
// *LockedError naming it. The lock file is never removed: removing it
// would let a third process lock a new file while the first still holds
// the old one.
//
// Nothing here waits on another process (the lock is tried, not waited
// for), so no call takes a context.
package state

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
)

const (
	// FileName is the state file in the state directory.
	FileName = "state.json"
	// LockName is the lock file in the state directory.
	LockName = "lock"
	// tmpPrefix starts the names of temporary files of Save.
	tmpPrefix = "." + FileName + ".tmp-"
	// maxSize bounds the state file Load reads.
	maxSize = 16 << 20
)

// Errors matched with errors.Is. A missing state file is os.ErrNotExist.
var (
	ErrClosed  = errors.New("state store is closed")
	ErrLocked  = errors.New("state directory is in use by another process")
	ErrCorrupt = errors.New("state file is damaged")
	ErrVersion = errors.New("state file has a version this build does not read")
)

// LockedError reports that another process owns the state directory.
type LockedError struct {
	Dir string
	PID int // of the holder, 0 when not known
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("state directory %s is in use by process %d (another kmsagent daemon?)", e.Dir, e.PID)
	}
	return fmt.Sprintf("state directory %s is in use by another process (another kmsagent daemon?)", e.Dir)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// CorruptError reports a state file that is not a whole document of the
// expected shape.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is damaged: %v", e.Path, e.Err)
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
func (e *CorruptError) Unwrap() error        { return e.Err }

// VersionError reports a state file of another schema version.
type VersionError struct {
	Path    string
	Version int // in the file
	Want    int // this build's
}

func (e *VersionError) Error() string {
	if e.Version > e.Want {
		return fmt.Sprintf("state file %s has version %d, newer than this build's %d (was a newer kmsagent run and then downgraded?)", e.Path, e.Version, e.Want)
	}
	return fmt.Sprintf("state file %s has version %d, which this build (version %d) cannot upgrade", e.Path, e.Version, e.Want)
}

func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// Options describe the document.
type Options[T any] struct {
	// Version is the schema version of T, from 1; Save writes it and
	// Load expects it.
	Version int
	// Upgrade, if set, converts the state of an older version; without
	// it an older file is a *VersionError.
	Upgrade func(version int, state json.RawMessage) (T, error)
}

// Store is an open state directory, locked for this process. It is safe
// for concurrent use; calls are serialised, so the last Save to return is
// what the file holds.
type Store[T any] struct {
	mu   sync.Mutex // serialises Save, Load and Close
	dir  *os.File
	lock *os.File
	path string // of the state file
	opts Options[T]

	// step, if set, is called before each step of Save; tests use it
	// to fail or stop there.
	step func(name string) error
}

// envelope is the file's shape.
type envelope struct {
	Version int             `json:"version"`
	State   json.RawMessage `json:"state"`
}

// Open opens the state directory dir, creating it with mode 0700 if
// missing, takes its lock, and removes temporary files a crashed Save
// left behind.
func Open[T any](dir string, opts Options[T]) (*Store[T], error) {
	if opts.Version < 1 {
		return nil, fmt.Errorf("state: schema version %d; versions start at 1", opts.Version)
	}
	d, err := openDir(dir)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &Store[T]{dir: d, path: filepath.Join(d.Name(), FileName), opts: opts}
	if err := s.takeLock(); err != nil {
		d.Close()
		return nil, err
	}
	if err := s.removeTemps(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openDir opens dir if it is trusted, or creates it.
func openDir(dir string) (*os.File, error) {
	d, err := safepath.OpenTrustedDir(dir, 0o077)
	if !errors.Is(err, os.ErrNotExist) {
		return d, err
	}
	d, created, err := safepath.MkdirAll(dir)
	if err != nil {
		return nil, err
	}
	if len(created) > 0 && created[len(created)-1] == d.Name() {
		if err := unix.Fchmod(int(d.Fd()), 0o700); err != nil {
			d.Close()
			return nil, &os.PathError{Op: "chmod", Path: d.Name(), Err: err}
		}
	}
	d.Close()
	// Check what is there now, whoever made it.
	return safepath.OpenTrustedDir(dir, 0o077)
}

func (s *Store[T]) takeLock() error {
	dfd := int(s.dir.Fd())
	lockPath := filepath.Join(s.dir.Name(), LockName)
	fd, err := unix.Openat(dfd, LockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("state: lock: %w", &os.PathError{Op: "open", Path: lockPath, Err: err})
	}
	f := os.NewFile(uintptr(fd), lockPath)
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EWOULDBLOCK {
		defer f.Close()
		var buf [32]byte
		n, _ := unix.Pread(fd, buf[:], 0)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:max(n, 0)])))
		return &LockedError{Dir: s.dir.Name(), PID: max(pid, 0)}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("state: lock: %w", &os.PathError{Op: "flock", Path: lockPath, Err: err})
	}
	// For the error message of the next one; the lock itself is the
	// flock, not this content.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := unix.Ftruncate(fd, 0); err == nil {
		unix.Pwrite(fd, pid, 0)
	}
	s.lock = f
	return nil
}

func (s *Store[T]) removeTemps() error {
	dfd := int(s.dir.Fd())
	names, err := s.dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("state: %w", &os.PathError{Op: "readdir", Path: s.dir.Name(), Err: err})
	}
	for _, name := range names {
		if strings.HasPrefix(name, tmpPrefix) {
			if err := unix.Unlinkat(dfd, name, 0); err != nil && err != unix.ENOENT {
				return fmt.Errorf("state: remove a temporary file left by a crash: %w", &os.PathError{Op: "unlink", Path: filepath.Join(s.dir.Name(), name), Err: err})
			}
		}
	}
	return nil
}

// Path is the state file's path.
func (s *Store[T]) Path() string { return s.path }

// Load reads the state file. A missing file is os.ErrNotExist (the
// daemon's first start); a damaged one a *CorruptError; one of another
// version a *VersionError.
func (s *Store[T]) Load() (T, error) {
	var zero T
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir == nil {
		return zero, ErrClosed
	}
	fd, err := unix.Openat(int(s.dir.Fd()), FileName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP {
		return zero, &CorruptError{Path: s.path, Err: errors.New("it is a symbolic link")}
	}
	if err != nil {
		return zero, fmt.Errorf("state: %w", &os.PathError{Op: "open", Path: s.path, Err: err})
	}
	f := os.NewFile(uintptr(fd), s.path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return zero, fmt.Errorf("state: %w", &os.PathError{Op: "stat", Path: s.path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return zero, &CorruptError{Path: s.path, Err: errors.New("it is not a regular file")}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return zero, fmt.Errorf("state: %w", &os.PathError{Op: "read", Path: s.path, Err: err})
	}
	return decode(s.path, data, s.opts)
}

// decode parses a state file's contents.
func decode[T any](path string, data []byte, opts Options[T]) (T, error) {
	var zero T
	if len(data) > maxSize {
		return zero, &CorruptError{Path: path, Err: fmt.Errorf("larger than %d bytes", maxSize)}
	}
	var env envelope
	if err := strict(data, &env); err != nil {
		return zero, &CorruptError{Path: path, Err: err}
	}
	switch {
	case env.Version < 1:
		return zero, &CorruptError{Path: path, Err: errors.New("no version")}
	case env.State == nil:
		return zero, &CorruptError{Path: path, Err: errors.New("no state")}
	case env.Version > opts.Version:
		return zero, &VersionError{Path: path, Version: env.Version, Want: opts.Version}
	case env.Version < opts.Version:
		if opts.Upgrade == nil {
			return zero, &VersionError{Path: path, Version: env.Version, Want: opts.Version}
		}
		v, err := opts.Upgrade(env.Version, env.State)
		if err != nil {
			return zero, fmt.Errorf("state file %s: upgrade from version %d: %w", path, env.Version, err)
		}
		return v, nil
	}
	var v T
	if err := strict(env.State, &v); err != nil {
		return zero, &CorruptError{Path: path, Err: err}
	}
	return v, nil
}

// strict decodes exactly one JSON value with no unknown fields.
func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if err == io.EOF {
			return errors.New("empty")
		}
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the document")
	}
	return nil
}

// Save replaces the state file with v, atomically and durably; see the
// package documentation. When Save fails before the rename the old file
// is untouched. When only the final directory sync fails, the new file
// is in place but a power cut could still bring back the old one; Save
// reports that as an error as well, and saving again is the remedy.
func (s *Store[T]) Save(v T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir == nil {
		return ErrClosed
	}
	state, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	data, err := json.MarshalIndent(envelope{Version: s.opts.Version, State: state}, "", "  ")
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	data = append(data, '\n')

	dfd := int(s.dir.Fd())
	if err := s.hook("create"); err != nil {
		return err
	}
	tmp, f, err := createTemp(dfd)
	if err != nil {
		return fmt.Errorf("state: create a temporary file in %s: %w", s.dir.Name(), err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	fail := func(op string, err error) error {
		return fmt.Errorf("state: save: %w", &os.PathError{Op: op, Path: filepath.Join(s.dir.Name(), tmp), Err: err})
	}
	// Written in two halves so that tests can stop Save with half a
	// document on disk.
	half := len(data) / 2
	if _, err := f.Write(data[:half]); err != nil {
		return fail("write", err)
	}
	if err := s.hook("write"); err != nil {
		return err
	}
	if _, err := f.Write(data[half:]); err != nil {
		return fail("write", err)
	}
	if err := s.hook("sync"); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := f.Close(); err != nil {
		return fail("close", err)
	}
	if err := s.hook("rename"); err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, FileName); err != nil {
		return fmt.Errorf("state: save: %w", &os.LinkError{Op: "rename", Old: filepath.Join(s.dir.Name(), tmp), New: s.path, Err: err})
	}
	renamed = true
	if err := s.hook("sync directory"); err != nil {
		return err
	}
	if err := s.dir.Sync(); err != nil {
		return fmt.Errorf("state: save: %s written, but the directory sync failed: %w", s.path, err)
	}
	return nil
}

func (s *Store[T]) hook(step string) error {
	if s.step == nil {
		return nil
	}
	return s.step(step)
}

// createTemp makes a new file for Save with O_EXCL and O_NOFOLLOW, mode
// 0600.
func createTemp(dfd int) (string, *os.File, error) {
	for range 100 {
		var r [8]byte
		rand.Read(r[:])
		name := tmpPrefix + hex.EncodeToString(r[:])
		fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		if err := unix.Fchmod(fd, 0o600); err != nil {
			unix.Close(fd)
			unix.Unlinkat(dfd, name, 0)
			return "", nil, err
		}
		return name, os.NewFile(uintptr(fd), name), nil
	}
	return "", nil, errors.New("no free temporary name")
}

// Close waits for a Save in progress and releases the lock and the
// directory.
func (s *Store[T]) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	if s.dir != nil {
		s.dir.Close()
		s.dir = nil
	}
	return nil
}
