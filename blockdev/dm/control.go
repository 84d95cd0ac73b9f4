package dm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Default locations; Options overrides them for tests.
const (
	DefaultControlPath = "/dev/mapper/control"
	DefaultNodeDir     = "/dev/mapper"
)

// Options configures Open. The zero value uses the standard paths.
type Options struct {
	// ControlPath is the device-mapper control node.
	ControlPath string
	// NodeDir is where /dev/mapper/<name> nodes are made when udev does
	// not make them.
	NodeDir string
	// UdevTimeout bounds each wait for udev to finish a device's event;
	// DefaultUdevTimeout when zero.
	UdevTimeout time.Duration
}

// Control is an open device-mapper control node. Its methods may be
// called from several goroutines; Close must come after all of them.
type Control struct {
	fd          int
	nodeDir     string
	version     Version
	udev        UdevMode
	udevTimeout time.Duration
}

// Open opens the control node, checks the kernel's interface version,
// and finds out whether udev runs and can tell when it is done with a
// device (see UdevMode).
func Open() (*Control, error) { return OpenWith(Options{}) }

// OpenWith is Open with explicit paths.
func OpenWith(o Options) (*Control, error) {
	if o.ControlPath == "" {
		o.ControlPath = DefaultControlPath
	}
	if o.NodeDir == "" {
		o.NodeDir = DefaultNodeDir
	}
	if o.UdevTimeout <= 0 {
		o.UdevTimeout = DefaultUdevTimeout
	}
	fd, err := openControl(o.ControlPath)
	if err != nil {
		return nil, err
	}
	c := &Control{
		fd: fd, nodeDir: o.NodeDir,
		udev:        detectUdev(udevControlSocket, udevRulesDirs, sysvSemProc),
		udevTimeout: o.UdevTimeout,
	}
	v, err := c.queryVersion()
	if err == nil {
		err = v.check()
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	c.version = v
	return c, nil
}

// Close closes the control node.
func (c *Control) Close() error {
	if err := unix.Close(c.fd); err != nil {
		return fmt.Errorf("dm: close control node: %w", err)
	}
	return nil
}

// Version is the kernel's ioctl interface version read at Open.
func (c *Control) Version() Version { return c.version }

// Udev is how device nodes and links are made, as detected at Open.
func (c *Control) Udev() UdevMode { return c.udev }

// NodeDir is the directory of the /dev/mapper/<name> nodes.
func (c *Control) NodeDir() string { return c.nodeDir }

// openControl opens the control node, making it first when /dev is a
// bare tmpfs without it: the misc minor comes from /proc/misc, which
// also tells whether device-mapper is in the kernel at all.
func openControl(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		return fd, nil
	}
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		// A stale node with no driver behind it.
		return -1, fmt.Errorf("dm: open %s: %w; device-mapper is not in this kernel (load the dm_mod and dm_crypt modules)", path, err)
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, fmt.Errorf("dm: open %s: %w", path, err)
	}
	minor, ok, merr := miscMinor("/proc/misc", "device-mapper")
	if merr != nil {
		return -1, fmt.Errorf("dm: open %s: %w (and %v)", path, err, merr)
	}
	if !ok {
		return -1, fmt.Errorf("dm: open %s: %w; device-mapper is not in this kernel (no \"device-mapper\" in /proc/misc; load the dm_mod module)", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return -1, fmt.Errorf("dm: create directory for %s: %w", path, err)
	}
	const miscMajor = 10
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(miscMajor, minor))); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("dm: create control node %s (10:%d): %w", path, minor, err)
	}
	fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("dm: open %s: %w", path, err)
	}
	return fd, nil
}

// miscMinor looks a misc device up in /proc/misc ("minor name" lines).
func miscMinor(path, name string) (uint32, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 2 && fields[1] == name {
			n, err := strconv.ParseUint(fields[0], 10, 32)
			if err != nil {
				return 0, false, fmt.Errorf("%s: bad minor %q for %s", path, fields[0], name)
			}
			return uint32(n), true, nil
		}
	}
	if err := s.Err(); err != nil {
		return 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, false, nil
}

// request is one ioctl: the header fields the caller sets and an optional
// payload placed right after the header.
type request struct {
	cmd     uintptr
	name    string
	uuid    string
	flags   uint32
	targets uint32
	// eventNr is dm_ioctl.event_nr; resume and remove carry the udev
	// flags and cookie there (see udev.go).
	eventNr uint32
	payload []byte
	// replySize asks for room for a reply payload; the buffer grows and
	// the ioctl is repeated while the kernel sets DM_BUFFER_FULL_FLAG.
	replySize int
}

// maxReply bounds the retries on DM_BUFFER_FULL_FLAG; a device list or
// table larger than this is not something this agent creates.
const maxReply = 16 << 20

// do runs one ioctl and returns the reply header and payload. The buffer
// is cleared before return when the request was marked secure, on top of
// the kernel clearing it, so no copy of a table lingers on the Go heap.
func (c *Control) do(r request) (header, []byte, error) {
	size := headerSize + len(r.payload)
	if r.replySize > 0 {
		size = headerSize + max(r.replySize, len(r.payload))
	}
	for {
		buf := make([]byte, size)
		h := header{
			Version:     [3]uint32{requiredMajor, 0, 0},
			DataSize:    uint32(size),
			DataStart:   headerSize,
			TargetCount: r.targets,
			Flags:       r.flags,
			EventNr:     r.eventNr,
			Name:        r.name,
			UUID:        r.uuid,
		}
		if err := h.marshal(buf); err != nil {
			return header{}, nil, err
		}
		copy(buf[headerSize:], r.payload)
		errno := ioctl(c.fd, r.cmd, buf)
		reply, perr := unmarshalHeader(buf)
		if errno != 0 {
			wipeIf(r.flags&flagSecureData != 0, buf)
			return reply, nil, errno
		}
		if perr != nil {
			wipeIf(r.flags&flagSecureData != 0, buf)
			return reply, nil, perr
		}
		if reply.Flags&flagBufferFull != 0 && r.replySize > 0 {
			wipeIf(r.flags&flagSecureData != 0, buf)
			if size >= maxReply {
				return reply, nil, fmt.Errorf("reply does not fit %d bytes", maxReply)
			}
			size = min(size*4, maxReply)
			continue
		}
		if r.replySize == 0 {
			wipeIf(r.flags&flagSecureData != 0, buf)
			return reply, nil, nil
		}
		data, err := reply.payload(buf)
		if err != nil {
			wipeIf(r.flags&flagSecureData != 0, buf)
			return reply, nil, err
		}
		// The caller parses the payload and clears it when secure.
		return reply, data, nil
	}
}

func ioctl(fd int, cmd uintptr, buf []byte) unix.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), cmd, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	return errno
}

func wipeIf(secure bool, b []byte) {
	if secure {
		clear(b)
		runtime.KeepAlive(b)
	}
}
