package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/probe"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// EncryptOptions are the parameters of a new image.
type EncryptOptions struct {
	KMS    kmsclient.KMS
	KeyID  string // KMS key that wraps the data key
	Region string // recorded in the token
	// SectorSize is the encryption sector size, 512 or 4096; 0 chooses
	// 4096, or 512 when the input's file system or partition table needs
	// it (see chooseSectorSize).
	SectorSize int
	// InputSize is the number of bytes the input will give, or -1 when
	// unknown (a pipe). Encrypt needs it to record the size in the header
	// it writes first; EncryptFile learns it at the end.
	InputSize int64
	// Progress, if set, is called after each chunk with the input bytes
	// done so far.
	Progress func(done int64)
}

// Result describes an image that was written or read.
type Result struct {
	UUID        string
	KeyID       string // the KMS key as the provider names it (encrypt)
	InputSize   int64  // raw bytes read (encrypt) or written (decrypt)
	PayloadSize int64  // encrypted payload bytes, whole sectors
	// PayloadOffset is where the payload starts: the size of the header
	// region (encrypt).
	PayloadOffset int64
	SectorSize    int // encryption sector size (encrypt)
	// SectorSizeFor names what in the input decided the sector size when
	// it was chosen automatically and is not the default (encrypt).
	SectorSizeFor string
	// SizeRecorded reports whether the header records InputSize, so that
	// decrypt gives back exactly the input (encrypt), or whether the
	// output was cut to a recorded size (decrypt).
	SizeRecorded bool
	// Warnings are things the caller should tell the user.
	Warnings []string
}

// memDevice is the header region of a new image, built in memory so it
// can go out first on a stream or last into a file.
type memDevice struct {
	b       []byte
	mapping []byte // the mmap holding b, if any
}

// headerRegion is the size of the header region luks2.Format lays out by
// default: two metadata copies and the keyslot area.
const headerRegion = 16 << 20

// newMemDevice returns an empty memDevice with room for the default
// header region. The room is asked for in 2 MiB pages where the kernel
// gives them: filling 16 MiB in 4 KiB pages costs 4096 page faults, the
// largest part of the cost of a small image on a virtual machine.
func newMemDevice() *memDevice {
	const huge = 2 << 20
	m, err := unix.Mmap(-1, 0, headerRegion+huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return &memDevice{b: make([]byte, 0, headerRegion)}
	}
	// Mapped memory is outside the Go heap: release unmaps it.
	start := (huge - int(uintptr(unsafe.Pointer(&m[0])))%huge) % huge
	b := m[start : start+headerRegion]
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // only a hint
	return &memDevice{b: b[:0], mapping: m}
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		n := len(m.b)
		m.b = slices.Grow(m.b, end-n)[:end]
		if int(off) > n {
			clear(m.b[n:off]) // what p does not cover
		}
	}
	return copy(m.b[off:], p), nil
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDevice) Sync() error { return nil }

// release gives the memory back.
func (m *memDevice) release() {
	if m.mapping != nil {
		unix.Munmap(m.mapping)
	}
	m.b, m.mapping = nil, nil
}

// SectorSizeError is the refusal of an encryption sector size larger
// than the block size of the file system (or the sector size of the
// partition table) in the input: the kernel would refuse to mount it from
// the encrypted device, whose logical blocks are the encryption sectors
// (ext4 says "bad block size 1024").
type SectorSizeError struct {
	SectorSize int
	Found      probe.Signature // what the input holds, with its BlockSize
}

func (e *SectorSizeError) Error() string {
	return fmt.Sprintf("the input holds %s, which cannot be used on a device with %d-byte sectors", e.Found.Name, e.SectorSize)
}

// chooseSectorSize returns the encryption sector size for an input that
// holds sigs (from probe.Scan of its start). An explicit size (requested
// != 0) is checked: a file system whose blocks are smaller than the
// sectors cannot be mounted from the encrypted device. With requested 0
// it picks volume.DefaultSectorSize unless the content needs smaller
// sectors; the string then names what decided.
//
// An MBR does not record its sector size, so it constrains no explicit
// choice, but the automatic one picks 512: partition tables are made on
// 512-byte sectors (loop devices, most disks) far more often than on 4Kn
// disks, and a table read with the wrong sector size points nowhere.
func chooseSectorSize(sigs []probe.Signature, requested int) (int, string, error) {
	if requested != 0 {
		for _, s := range sigs {
			if s.BlockSize != 0 && s.BlockSize < requested {
				return 0, "", &SectorSizeError{SectorSize: requested, Found: s}
			}
		}
		return requested, "", nil
	}
	gpt := slices.ContainsFunc(sigs, func(s probe.Signature) bool { return s.Type == probe.TypeGPT })
	for _, s := range sigs {
		// A GPT's protective MBR says nothing; the GPT header does.
		if (s.BlockSize != 0 && s.BlockSize < volume.DefaultSectorSize) || (s.Type == probe.TypeDOS && !gpt) {
			return 512, s.Name, nil
		}
	}
	return volume.DefaultSectorSize, "", nil
}

// newImage is a header under construction and the cipher of its payload.
type newImage struct {
	h         *luks2.Header
	mem       *memDevice
	sc        *sectorCrypt
	offset    int64
	res       *volume.Result
	sectorFor string // what chose the sector size, if not the default
}

// streamHead wraps a stream input so that its start can be looked at
// before it is read: the head, and the reader that gives it back.
func streamHead(in io.Reader) ([]byte, io.Reader, error) {
	br := bufio.NewReaderSize(in, probe.PrefixSize)
	head, err := br.Peek(probe.PrefixSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read input: %w", err)
	}
	return head, br, nil
}

// readHead reads the start of a positional input.
func readHead(in io.ReaderAt, size int64) ([]byte, error) {
	head := make([]byte, min(size, probe.PrefixSize))
	n, err := in.ReadAt(head, 0)
	if n == len(head) {
		return head, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = changed(int64(n), size)
	}
	return nil, fmt.Errorf("read input: %w", err)
}

// prepare chooses or checks the sector size from head, the start of the
// input, asks the KMS for the data key and builds the header in memory,
// before any output is written.
func prepare(ctx context.Context, head []byte, o EncryptOptions) (*newImage, error) {
	if o.KMS == nil {
		return nil, errors.New("no KMS configured")
	}
	sigs, err := probe.Scan(bytes.NewReader(head), -1)
	if err != nil {
		return nil, fmt.Errorf("read input: %w", err)
	}
	sector, why, err := chooseSectorSize(sigs, o.SectorSize)
	if err != nil {
		return nil, err
	}
	mem := newMemDevice()
	h, vk, res, err := volume.Create(ctx, mem, o.KMS, volume.CreateOptions{KeyID: o.KeyID, Region: o.Region, SectorSize: sector})
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	seg, err := h.Segment()
	if err != nil {
		return nil, err
	}
	sc, err := newSectorCrypt(vk.Bytes(), seg.SectorSize, seg.IVTweak)
	if err != nil {
		return nil, err
	}
	// The region written first or last is exactly the data offset; the
	// keyslot area ends there or before.
	if len(mem.b) < int(seg.Offset) {
		mem.WriteAt(nil, int64(seg.Offset))
	}
	mem.b = mem.b[:seg.Offset]
	return &newImage{h: h, mem: mem, sc: sc, offset: int64(seg.Offset), res: res, sectorFor: why}, nil
}

// header commits the header into the memory region, with the input size
// recorded when it is known (size >= 0), and returns the region.
func (im *newImage) header(size int64) ([]byte, error) {
	if size >= 0 {
		raw, err := token.Image{Size: uint64(size)}.Marshal()
		if err != nil {
			return nil, err
		}
		if _, err := im.h.AddToken(raw); err != nil {
			return nil, fmt.Errorf("image size token: %w", err)
		}
	}
	if err := im.h.Write(im.mem); err != nil {
		return nil, err
	}
	return im.mem.b, nil
}

func (im *newImage) result(size int64, recorded bool) *Result {
	ss := int64(im.sc.sectorSize)
	return &Result{UUID: im.res.UUID, KeyID: im.res.KeyID, InputSize: size, PayloadSize: (size + ss - 1) / ss * ss, PayloadOffset: im.offset, SizeRecorded: recorded,
		SectorSize: im.sc.sectorSize, SectorSizeFor: im.sectorFor}
}

// changed is the error for an input whose size moved under us.
func changed(got, want int64) error {
	return fmt.Errorf("the input gave %d bytes but was %d bytes when encryption started; it changed while being read", got, want)
}

// Encrypt writes an image to a stream: the header first, then the
// encrypted payload. The input size is recorded when o.InputSize gives
// it; the input must then be exactly that long.
func Encrypt(ctx context.Context, in io.Reader, out io.Writer, o EncryptOptions) (*Result, error) {
	// An input that can be read by offset (a file) with its size given
	// is read by all workers at once; any other in order.
	var t *transfer
	var head []byte
	var err error
	if at, ok := in.(io.ReaderAt); ok && o.InputSize >= 0 {
		head, err = readHead(at, o.InputSize)
		t = &transfer{srcAt: at, srcLen: o.InputSize, holes: sourceHints(at, 0, o.InputSize)}
	} else {
		head, in, err = streamHead(in)
		t = &transfer{src: in, srcLen: -1}
	}
	if err != nil {
		return nil, err
	}
	im, err := prepare(ctx, head, o)
	if err != nil {
		return nil, err
	}
	defer im.sc.wipe()
	defer im.mem.release()
	hdr, err := im.header(o.InputSize)
	if err != nil {
		return nil, err
	}
	if _, err := out.Write(hdr); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	t.sc, t.dst, t.dstLen, t.progress = im.sc, out, -1, o.Progress
	size, err := t.run(ctx)
	if err != nil {
		return nil, err
	}
	if o.InputSize >= 0 && size != o.InputSize {
		return nil, changed(size, o.InputSize)
	}
	res := im.result(size, o.InputSize >= 0)
	if !res.SizeRecorded && size%int64(im.sc.sectorSize) != 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the input size (%d bytes) was unknown when the header was written and is not a multiple of %d; decrypt will give %d bytes, padded with zeros", size, im.sc.sectorSize, res.PayloadSize))
	}
	return res, nil
}

// EncryptAt writes the image of the size bytes of in into out at off:
// the encrypted payload first, then the header with the input size. It
// neither syncs nor truncates out, so that the image can be one part of
// a larger one (a partition of a disk image); the image ends at off +
// result.PayloadOffset + result.PayloadSize. in and out get parallel
// ReadAt and WriteAt calls on distinct ranges, as their contracts allow.
func EncryptAt(ctx context.Context, in io.ReaderAt, size int64, out io.WriterAt, off int64, o EncryptOptions) (*Result, error) {
	head, err := readHead(in, size)
	if err != nil {
		return nil, err
	}
	im, err := prepare(ctx, head, o)
	if err != nil {
		return nil, err
	}
	defer im.sc.wipe()
	defer im.mem.release()
	t := &transfer{sc: im.sc, srcAt: in, srcLen: size, holes: sourceHints(in, 0, size),
		dstAt: out, dstOff: off + im.offset, dstLen: -1, progress: o.Progress}
	if _, err := t.run(ctx); err != nil {
		return nil, err
	}
	return im.finish(out, off, size)
}

// finish writes the header of an image whose payload is in place.
func (im *newImage) finish(out io.WriterAt, off, size int64) (*Result, error) {
	hdr, err := im.header(size)
	if err != nil {
		return nil, err
	}
	if _, err := out.WriteAt(hdr, off); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	return im.result(size, true), nil
}

// EncryptFile writes an image into out, a new file: the encrypted payload
// first, then the header with the input size, then fsync. An input that
// can be read by offset (a file) with o.InputSize given is read by all
// workers at once; any other is read as a stream.
func EncryptFile(ctx context.Context, in io.Reader, out *os.File, o EncryptOptions) (*Result, error) {
	var res *Result
	var err error
	if at, ok := in.(io.ReaderAt); ok && o.InputSize >= 0 {
		if err := preallocate(out, headerRegion+o.InputSize); err != nil {
			return nil, err
		}
		res, err = EncryptAt(ctx, at, o.InputSize, out, 0, o)
	} else {
		res, err = encryptStreamToFile(ctx, in, out, o)
	}
	if err != nil {
		return nil, err
	}
	if err := out.Truncate(res.PayloadOffset + res.PayloadSize); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	if err := out.Sync(); err != nil {
		return nil, fmt.Errorf("sync output: %w", err)
	}
	return res, nil
}

// preallocate reserves the space of the image before the work starts, so
// that a full disk says so at once rather than after minutes, and the
// file system can lay the image out in few extents. File systems that
// cannot (EOPNOTSUPP) are written as before; the final truncate sets
// the exact size.
func preallocate(out *os.File, size int64) error {
	err := unix.Fallocate(int(out.Fd()), 0, 0, size)
	if err == nil || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return fmt.Errorf("reserve %d bytes for the output: %w", size, err)
}

func encryptStreamToFile(ctx context.Context, in io.Reader, out *os.File, o EncryptOptions) (*Result, error) {
	head, in, err := streamHead(in)
	if err != nil {
		return nil, err
	}
	im, err := prepare(ctx, head, o)
	if err != nil {
		return nil, err
	}
	defer im.sc.wipe()
	defer im.mem.release()
	t := &transfer{sc: im.sc, src: in, srcLen: -1, dstAt: out, dstOff: im.offset, dstLen: -1, progress: o.Progress}
	size, err := t.run(ctx)
	if err != nil {
		return nil, err
	}
	if o.InputSize >= 0 && size != o.InputSize {
		return nil, changed(size, o.InputSize)
	}
	return im.finish(out, 0, size)
}
