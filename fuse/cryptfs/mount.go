package cryptfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
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
	// AllowOther lets users other than the mounting one in. Without it
	// only the mounting user gets in. Either way the kernel checks
	// permissions against the file modes and POSIX ACLs (see Mount).
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
//
// The mount point is opened without following symlinks and checked
// through its descriptor (safepath.OpenMountpoint): a directory, nothing
// mounted on it yet. As root, mount(2) is then given /proc/self/fd/N, so
// the kernel mounts on the directory checked even if its path has been
// swapped for a symlink meanwhile, and the mount table shows its real
// path. Other users mount through fusermount3, the setuid helper, which
// guards its own lookup of the path (it changes into the directory and
// mounts on ".") and only mounts where that user may write.
//
// The mount negotiates POSIX ACLs with the kernel (FUSE_POSIX_ACL), as
// gocryptfs -acl does. The kernel then checks every access against the
// modes and ACLs of the plaintext view itself, with or without
// allow_other, and reads the ACLs from us (they are stored unencrypted,
// see xattr.go). Without it setfacl would fail with EOPNOTSUPP on kernels
// before 6.2 and set ACLs that nothing enforces on later ones. The price
// is that of default_permissions on a private mount: after a create or an
// unlink the kernel refreshes the parent directory's attributes with a
// GETATTR before its next permission check.
//
// Mount sets the process's umask to 0: the kernel applies the caller's
// umask before a create request reaches us.
func Mount(mountpoint string, root fs.InodeEmbedder, mo MountOptions) (*Server, error) {
	sec := time.Second
	pick := func(d *time.Duration) *time.Duration {
		if d == nil {
			return &sec
		}
		return d
	}
	fsName := mo.FsName
	// The root shows the cipher directory's inode number, as in
	// gocryptfs; go-fuse would otherwise report 0.
	var rootAttr *fs.StableAttr
	if n, ok := root.(*node); ok {
		if fsName == "" {
			fsName = n.r.cipherDir
		}
		var x unix.Statx_t
		if e := statAt(n.r.rootFd, "", &x); e != 0 {
			return nil, fmt.Errorf("cryptfs: stat %s: %w", n.r.cipherDir, e)
		}
		a := n.r.stableAttr(&x)
		rootAttr = &a
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
		RootStableAttr:  rootAttr,
		// Show modes as they are, 0000 included.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:     fsName,
			Name:       Subtype,
			AllowOther: mo.AllowOther,
			Options:    options,
			MaxWrite:   maxWrite,
			// POSIX ACLs: the kernel enforces them and always checks
			// permissions itself (FUSE_POSIX_ACL implies
			// default_permissions), as gocryptfs -acl does.
			EnableAcl: true,
			// Every read reply is decrypted data in memory: go-fuse's
			// splice attempt on it would cost a pipe resize and a write
			// into the pipe per reply before falling back to writev,
			// and replies over 1 MiB fail it with a log line each.
			DisableSplice: true,
			// We clear set-user-ID and set-group-ID bits on writes
			// ourselves (killpriv.go), which spares a GETXATTR round
			// trip per write and a GETATTR per chown.
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
			Debug:             mo.Debug,
		},
	}
	// The kernel has applied the caller's umask to the mode of every
	// create request already (go-fuse does not negotiate
	// FUSE_DONT_MASK); ours must not mask it a second time. The umask is
	// the process's, so this holds for every mount it serves.
	unix.Umask(0)
	mp, err := safepath.OpenMountpoint(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("cryptfs: %w", err)
	}
	if os.Geteuid() != 0 {
		mp.Close()
		server, err := fuse.NewServer(newRawFS(root, opts), mp.Path, &opts.MountOptions)
		if err == nil {
			go server.Serve()
			err = server.WaitMount()
		}
		if err != nil {
			return nil, fmt.Errorf("cryptfs: mount %s on %s: %w", fsName, mp.Path, err)
		}
		return &Server{Server: server}, nil
	}
	server, err := mountAt(mp, root, opts)
	if err != nil {
		mp.Close()
		return nil, fmt.Errorf("cryptfs: mount %s on %s: %w", fsName, mp.Path, err)
	}
	return server, nil
}

// Server serves one mount: go-fuse's server, with an Unmount that finds
// the mount from the directory opened at Mount rather than by its path.
type Server struct {
	*fuse.Server

	mu   sync.Mutex
	mp   *safepath.Mountpoint // nil when fusermount3 mounted it
	done bool                 // the mount is gone and mp closed
}

// Unmount unmounts and waits for the server to stop. It is idempotent.
func (s *Server) Unmount() error {
	if s.mp == nil {
		return s.Server.Unmount()
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	var err error
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		// The kernel may not have released the last open files of a
		// process that just exited.
		err = s.mp.Unmount(0)
		if !errors.Is(err, unix.EBUSY) || try == 4 {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.Server.Wait()
	s.finish()
	return nil
}

// finish closes the mount point once the mount is gone.
func (s *Server) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.done = true
		s.mp.Close()
	}
}

// mountAt mounts as root: /dev/fuse opened here, mount(2) on the
// descriptor of the mount point, and go-fuse handed the connection
// through its /dev/fd/N convention so it does not mount again by path.
func mountAt(mp *safepath.Mountpoint, root fs.InodeEmbedder, opts *fs.Options) (*Server, error) {
	mo := &opts.MountOptions
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	// As go-fuse's direct mount and fusermount3 do: nosuid and nodev
	// unless asked otherwise, the flag options as flags, the rest as
	// data for the kernel.
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	data := []string{
		"fd=" + strconv.Itoa(dev),
		fmt.Sprintf("rootmode=%o", unix.S_IFDIR),
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
		"max_read=" + strconv.Itoa(mo.MaxWrite),
	}
	for _, o := range mo.Options {
		switch o {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		default:
			data = append(data, o)
		}
	}
	if mo.AllowOther {
		data = append(data, "allow_other")
	}
	if err := mp.Mount(mo.FsName, "fuse."+mo.Name, flags, strings.Join(data, ",")); err != nil {
		unix.Close(dev)
		return nil, err
	}
	mo.DirectMount, mo.DirectMountStrict = false, false
	server, err := fuse.NewServer(newRawFS(root, opts), "/dev/fd/"+strconv.Itoa(dev), mo)
	if err != nil {
		// NewServer closed dev if it got as far as INIT; the detach
		// drops the mount either way.
		mp.Unmount(unix.MNT_DETACH)
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		mp.Unmount(unix.MNT_DETACH)
		return nil, err
	}
	s := &Server{Server: server, mp: mp}
	go func() {
		server.Wait()
		s.finish()
	}()
	if r, err := mp.OpenMounted(); err == nil {
		pollHack(r)
		setReadAhead(r, readAheadKB)
		r.Close()
	}
	return s, nil
}

// newRawFS is go-fuse's node file system for root, with the requests that
// carry kill-suid/sgid flags intercepted (see killPrivFS).
func newRawFS(root fs.InodeEmbedder, opts *fs.Options) fuse.RawFileSystem {
	return killPrivFS{fs.NewNodeFS(root, opts)}
}

// pollHack makes the kernel ask our server about poll(2) once, now: the
// answer (not supported) is cached, so a later poll from this process
// on its own mount cannot wait on itself. go-fuse does this by path for
// the mounts it makes; it serves pollHackName in the root for it.
func pollHack(root *os.File) {
	const pollHackName = ".go-fuse-epoll-hack"
	fd, err := unix.Openat(int(root.Fd()), pollHackName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
}

// readAheadKB is the kernel read-ahead we ask for: one maximal request.
// The kernel's default for a FUSE mount is 128 KiB, so a sequential read
// costs a round trip and a cipher file read per 128 KiB; with 1 MiB the
// same reads take about half the time here.
const readAheadKB = maxWrite / 1024

// setReadAhead raises the read-ahead of the mount's backing device info,
// which FUSE can only lower through INIT. Writing it needs root; without,
// the kernel default stays, which is only slower.
func setReadAhead(root *os.File, kb int) {
	var st unix.Stat_t
	if err := unix.Fstat(int(root.Fd()), &st); err != nil {
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
