package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
)

// Defaults for Options.
const (
	DefaultMaxSize = 64 << 20
	DefaultKeep    = 10
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("audit log is closed")

// Options tune a Log. The zero value is usable.
type Options struct {
	// MaxSize is the size in bytes a log may reach before it is rotated;
	// 0 means DefaultMaxSize. A record larger than MaxSize still goes
	// into a file of its own.
	MaxSize int64
	// Keep is how many rotated files are kept (path.1 ... path.Keep); 0
	// means DefaultKeep.
	Keep int
	// FailOpen makes Write return nil when a record cannot be written,
	// counting it in Dropped instead. See the package documentation for
	// the trade-off.
	FailOpen bool
	// Report, if set, is told of problems Write does not return: records
	// dropped under FailOpen, and rotations that failed (the record then
	// goes into the current file, which grows past MaxSize).
	Report func(error)
}

// Log appends records to an audit log file. It is safe for concurrent
// use.
type Log struct {
	path string
	name string   // base name of path
	dir  *os.File // the trusted directory holding it
	opts Options

	// sem is a one-slot mutex that a waiting Write can give up on when
	// its context ends.
	sem     chan struct{}
	f       *os.File // nil after Close
	ino     uint64   // of f, to notice that another process rotated
	dev     uint64
	size    int64
	torn    bool // the file ends inside a line: start the next record on a new one
	closed  bool
	dropped atomic.Uint64

	// step, if set, is called before each step of a rotation; tests
	// use it to fail or stop there.
	step func(name string) error
}

// Open opens (creating it 0600 if needed) the audit log at path for
// appending. The directory must exist, be owned by root and not be
// writable by group or others.
func Open(path string, opts Options) (*Log, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	dir, err := safepath.OpenTrustedDir(filepath.Dir(abs), 0o022)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", abs, err)
	}
	l := &Log{path: abs, name: filepath.Base(abs), dir: dir, opts: opts, sem: make(chan struct{}, 1)}
	if err := l.openFile(); err != nil {
		dir.Close()
		return nil, err
	}
	return l, nil
}

// openFile opens or creates the current log file.
func (l *Log) openFile() error {
	dfd := int(l.dir.Fd())
	const flags = unix.O_RDWR | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dfd, l.name, flags, 0)
	created := false
	if err == unix.ENOENT {
		fd, err = unix.Openat(dfd, l.name, flags|unix.O_CREAT|unix.O_EXCL, 0o600)
		created = err == nil
	}
	if err == unix.ELOOP {
		return fmt.Errorf("audit log %s is a symbolic link; root does not append through one: remove it", l.path)
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", &os.PathError{Op: "open", Path: l.path, Err: err})
	}
	f := os.NewFile(uintptr(fd), l.path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", &os.PathError{Op: "stat", Path: l.path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return fmt.Errorf("audit log %s is not a regular file; move it away", l.path)
	}
	if created {
		// The umask must not decide who reads the log.
		if err := unix.Fchmod(fd, 0o600); err != nil {
			f.Close()
			return fmt.Errorf("audit log: %w", &os.PathError{Op: "chmod", Path: l.path, Err: err})
		}
		// Records fsync'ed into a file whose directory entry is lost
		// in a power cut are lost with it.
		if err := l.dir.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("audit log: sync %s: %w", l.dir.Name(), err)
		}
	}
	torn, err := l.endsTorn(f, st.Size)
	if err != nil {
		f.Close()
		return err
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.ino, l.dev, l.size, l.torn = f, st.Ino, st.Dev, st.Size, torn
	return nil
}

// endsTorn reports whether f, of the given size, ends inside a line.
func (l *Log) endsTorn(f *os.File, size int64) (bool, error) {
	if size == 0 {
		return false, nil
	}
	var last [1]byte
	if _, err := unix.Pread(int(f.Fd()), last[:], size-1); err != nil {
		return false, fmt.Errorf("audit log: %w", &os.PathError{Op: "read", Path: l.path, Err: err})
	}
	return last[0] != '\n', nil
}

// catchUp follows what other processes did to the log since our last
// write: a rotation (path is another file now, or none) or appends. The
// caller holds the directory lock.
func (l *Log) catchUp() error {
	var st unix.Stat_t
	err := unix.Fstatat(int(l.dir.Fd()), l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT || (err == nil && (st.Ino != l.ino || st.Dev != l.dev)) {
		return l.openFile()
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", &os.PathError{Op: "stat", Path: l.path, Err: err})
	}
	if st.Size != l.size {
		torn, err := l.endsTorn(l.f, st.Size)
		if err != nil {
			return err
		}
		l.size, l.torn = st.Size, torn
	}
	return nil
}

// Path is the path of the current log file.
func (l *Log) Path() string { return l.path }

// Dropped counts the records not written under FailOpen.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Write appends r, setting its time if zero, and returns once it is on
// disk. It returns an error if the record could not be written, unless
// the Log fails open; it waits for other writers only as long as ctx
// allows.
func (l *Log) Write(ctx context.Context, r Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit record: %w", err)
	}
	line = append(line, '\n')
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("audit log %s: %w", l.path, context.Cause(ctx))
	}
	err = l.append(line)
	<-l.sem
	if err == nil || errors.Is(err, ErrClosed) || !l.opts.FailOpen {
		return err
	}
	l.dropped.Add(1)
	l.report(fmt.Errorf("%w (record dropped: the log fails open)", err))
	return nil
}

func (l *Log) report(err error) {
	if l.opts.Report != nil {
		l.opts.Report(err)
	}
}

// append writes line with one write(2) and syncs it. The caller holds
// sem.
func (l *Log) append(line []byte) error {
	if l.closed {
		return ErrClosed
	}
	// The lock on the directory keeps writers in other processes from
	// rotating under us; it is held for one write and fdatasync.
	dfd := int(l.dir.Fd())
	if err := flock(dfd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("audit log: lock %s: %w", l.dir.Name(), err)
	}
	defer flock(dfd, unix.LOCK_UN)
	if err := l.catchUp(); err != nil {
		return err
	}
	if l.size > 0 && l.size+int64(len(line)) > l.opts.MaxSize {
		if err := l.rotate(); err != nil {
			l.report(err)
		}
	}
	buf := line
	if l.torn {
		buf = append([]byte{'\n'}, line...)
	}
	fd := int(l.f.Fd())
	// One write(2) puts a whole record in the file. A regular file
	// takes less only when the disk fills up or a file size limit is
	// hit; the rest is then offered again, which finishes the line if
	// space came back and otherwise yields the errno (ENOSPC) that the
	// short count does not give.
	var err error
	for len(buf) > 0 {
		n, werr := unix.Write(fd, buf)
		if werr == unix.EINTR {
			continue
		}
		if n > 0 {
			l.size += int64(n)
			l.torn = buf[n-1] != '\n'
			buf = buf[n:]
		}
		if werr != nil {
			err = werr
			break
		}
		if n == 0 {
			err = io.ErrShortWrite
			break
		}
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", &os.PathError{Op: "write", Path: l.path, Err: err})
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("audit log: %w", &os.PathError{Op: "fdatasync", Path: l.path, Err: err})
	}
	return nil
}

// rotate shifts path.N-1 to path.N, ..., path to path.1 and opens a new
// path. Each step is one rename, so a crash between steps leaves every
// record in one file. If the new file cannot be made, l.f stays on the
// old one (now path.1), so the record at hand still goes into a kept
// file, in order; the next Write tries to create path again.
func (l *Log) rotate() error {
	dfd := int(l.dir.Fd())
	gen := func(i int) string { return l.name + "." + strconv.Itoa(i) }
	// Start from the highest generation there is, not from Keep: a
	// large Keep would otherwise cost that many renames every time.
	top := l.opts.Keep - 1
	if names, err := l.listDir(); err == nil {
		highest := 0
		if gens := rotated(names, l.name); len(gens) > 0 {
			highest = gens[0]
		}
		top = min(top, highest)
	}
	for i := top; i >= 0; i-- {
		from := l.name
		if i > 0 {
			from = gen(i)
		}
		if err := l.hook("rename " + from); err != nil {
			return err
		}
		if err := unix.Renameat(dfd, from, dfd, gen(i+1)); err != nil && err != unix.ENOENT {
			return fmt.Errorf("audit log: rotate: %w", &os.LinkError{Op: "rename", Old: filepath.Join(l.dir.Name(), from), New: filepath.Join(l.dir.Name(), gen(i+1)), Err: err})
		}
	}
	if err := l.hook("create"); err != nil {
		return err
	}
	if err := l.openFile(); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}

// listDir lists the log's directory from its start.
func (l *Log) listDir() ([]string, error) {
	// Seek resets the listing, which an earlier rotation consumed.
	if _, err := l.dir.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return l.dir.Readdirnames(-1)
}

func flock(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}

func (l *Log) hook(step string) error {
	if l.step == nil {
		return nil
	}
	return l.step(step)
}

// Close waits for a Write in progress and closes the log.
func (l *Log) Close() error {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
	}
	l.dir.Close()
	return err
}
