package cryptfs

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/nametransform"
)

// Options configures one file system instance.
type Options struct {
	// CipherDir is the encrypted directory; it must hold gocryptfs.diriv.
	CipherDir string
	// Core holds the keys derived from the master key. The caller owns
	// it and wipes it after unmount.
	Core *cryptocore.CryptoCore
	// ReadOnly refuses every modification with EROFS.
	ReadOnly bool
	// Logger receives one line per tampered block and per undecryptable
	// name. Nil discards. Key material is never logged.
	Logger *slog.Logger
	// MaxOpenDirs bounds the directory descriptors kept open; 0 means
	// defaultMaxOpenDirs.
	MaxOpenDirs int
}

// ErrNotCipherDir is returned by NewRoot and CheckKey for a directory
// without a gocryptfs.diriv.
var ErrNotCipherDir = errors.New("cryptfs: not an encrypted directory (no " + nametransform.DirIVFilename + ")")

// ErrWrongKey is returned by CheckKey when the master key does not decrypt
// the cipher directory.
var ErrWrongKey = errors.New("cryptfs: master key does not decrypt this directory")

const defaultMaxOpenDirs = 1024

// rootData is the state shared by all nodes of one mount.
type rootData struct {
	cipherDir string
	rootFd    int
	rootDev   uint64
	ro        bool
	ce        *contentenc.ContentEnc
	nt        *nametransform.NameTransform
	log       *slog.Logger
	// chown is set when running as root: new entries get the caller's
	// owner, as on a local file system.
	chown bool
	// noLabels is set when SELinux is off on this host: a missing
	// security.selinux is then reported as unsupported (see xattr.go).
	noLabels bool
	// noFallocate is set once the cipher file system refused fallocate,
	// so that writes stop asking (see reserve).
	noFallocate atomic.Bool

	root     *node
	fds      dirFds
	reported reportOnce

	closeOnce sync.Once
}

// NewRoot opens opts.CipherDir and returns the root node of the plaintext
// view, ready for Mount. It fails if the directory has no valid
// gocryptfs.diriv.
func NewRoot(opts Options) (fs.InodeEmbedder, error) {
	r, err := newRootData(opts)
	if err != nil {
		return nil, err
	}
	return r.root, nil
}

func newRootData(opts Options) (*rootData, error) {
	if opts.Core == nil {
		return nil, errors.New("cryptfs: no crypto core")
	}
	fd, err := unix.Open(opts.CipherDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cryptfs: open cipher directory: %w", &os.PathError{Op: "open", Path: opts.CipherDir, Err: err})
	}
	nt := nametransform.New(opts.Core.NameBlock())
	iv, err := nametransform.ReadDirIVAt(fd)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%w: %s", ErrNotCipherDir, opts.CipherDir)
		}
		return nil, fmt.Errorf("cryptfs: %s: %w", opts.CipherDir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cryptfs: stat cipher directory: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &rootData{
		cipherDir: opts.CipherDir,
		rootFd:    fd,
		rootDev:   st.Dev,
		ro:        opts.ReadOnly,
		ce:        contentenc.New(opts.Core.ContentAEAD()),
		nt:        nt,
		log:       logger,
		chown:     os.Geteuid() == 0,
		noLabels:  labelsUnsupported(),
	}
	r.fds.max = opts.MaxOpenDirs
	if r.fds.max <= 0 {
		r.fds.max = defaultMaxOpenDirs
	}
	r.reported.init()
	r.root = r.newNode()
	r.root.iv = iv
	return r, nil
}

// close releases every descriptor and drops the references to the
// ciphers, so that once the caller wipes the CryptoCore nothing here keeps
// key schedules reachable. It runs when the root is forgotten, which
// go-fuse does on unmount after the last request has been answered.
func (r *rootData) close() {
	r.closeOnce.Do(func() {
		r.fds.closeAll()
		unix.Close(r.rootFd)
		r.ce, r.nt = nil, nil
	})
}

// InitDir prepares an empty directory as a cipher directory by writing
// its root gocryptfs.diriv. It fails if one exists already.
func InitDir(cipherDir string) error {
	fd, err := unix.Open(cipherDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: cipherDir, Err: err}
	}
	defer unix.Close(fd)
	if err := nametransform.WriteDirIVAt(fd); err != nil {
		return fmt.Errorf("cryptfs: %s: write %s: %w", cipherDir, nametransform.DirIVFilename, err)
	}
	return nil
}

// errno extracts the syscall.Errno from err; anything else is EIO.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
