package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"kmsagent/blockdev/partition"
	"kmsagent/blockdev/probe"
	"kmsagent/blockdev/volume"
)

// headerSize is the LUKS2 header region prepare lays out (luks2.Format's
// default): a partition must have room to grow by it, which is checked
// before the KMS is asked for a key.
const headerSize = 16 << 20

// PartitionResult describes a disk image written by EncryptPartition or
// DecryptPartition.
type PartitionResult struct {
	Result
	Table     *partition.Table    // the output's table
	Partition partition.Partition // the partition, as it is in the output
	Grown     int64               // bytes the disk grew by (negative: shrank)
}

// ReadTable reads the partition table of a disk image.
func ReadTable(img io.ReaderAt, size int64) (*partition.Table, error) {
	t, err := partition.Read(img, size)
	if err != nil {
		return nil, fmt.Errorf("partition table: %w", err)
	}
	return t, nil
}

// partDevice is one partition of a disk image, as a device of its own.
type partDevice struct {
	f         *os.File
	off, size int64
	pos       int64
}

// OpenPartition returns partition n of the disk image in f, to read (and,
// if f is open for writing, change) its LUKS2 header as if it were a
// device of its own.
func OpenPartition(f *os.File, n int) (Disk, partition.Partition, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, partition.Partition{}, fmt.Errorf("image size: %w", err)
	}
	t, err := ReadTable(f, size)
	if err != nil {
		return nil, partition.Partition{}, err
	}
	p, err := t.Partition(n)
	if err != nil {
		return nil, p, err
	}
	return &partDevice{f: f, off: p.Start, size: p.Size}, p, nil
}

func (d *partDevice) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= d.size {
		return 0, io.EOF
	}
	n, err := d.f.ReadAt(b[:min(int64(len(b)), d.size-off)], d.off+off)
	if err == nil && n < len(b) {
		err = io.EOF
	}
	return n, err
}

func (d *partDevice) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > d.size {
		return 0, fmt.Errorf("write of %d bytes at %d runs past the end of the %d-byte partition", len(b), off, d.size)
	}
	return d.f.WriteAt(b, d.off+off)
}

func (d *partDevice) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += d.pos
	case io.SeekEnd:
		off += d.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if off < 0 {
		return 0, errors.New("seek: negative position")
	}
	d.pos = off
	return off, nil
}

func (d *partDevice) Sync() error { return d.f.Sync() }

// EncryptPartition writes to out (a new, empty file) the disk image in
// (of inSize bytes) with partition n encrypted as image encrypt would
// encrypt its contents, and the partition table changed for the
// partition's new size. o.InputSize is ignored: the input is the
// partition.
func EncryptPartition(ctx context.Context, in io.ReaderAt, inSize int64, out *os.File, n int, o EncryptOptions) (*PartitionResult, error) {
	t, err := ReadTable(in, inSize)
	if err != nil {
		return nil, err
	}
	p, err := t.Partition(n)
	if err != nil {
		return nil, err
	}
	if sigs, err := probe.Scan(io.NewSectionReader(in, p.Start, p.Size), p.Size); err == nil &&
		slices.ContainsFunc(sigs, func(s probe.Signature) bool { return s.Type == probe.TypeLUKS && !s.Secondary }) {
		return nil, fmt.Errorf("partition %d already holds a LUKS header", n)
	}
	// Room for the header, before the KMS is asked for anything.
	if _, err := t.Resize(n, p.Size+headerSize); err != nil {
		return nil, err
	}
	// The image goes in place first: its sector size and header size,
	// which set the partition's new size, are known once the KMS gave
	// the key. The rest of the disk is copied around it.
	o.InputSize = p.Size
	res, err := EncryptAt(ctx, io.NewSectionReader(in, p.Start, p.Size), p.Size, out, p.Start, o)
	if err != nil {
		return nil, err
	}
	nt, err := t.Resize(n, res.PayloadOffset+res.PayloadSize)
	if err != nil {
		return nil, err
	}
	np, _ := nt.Partition(n)
	if err := copyAround(ctx, in, inSize, out, t, nt, p, np); err != nil {
		return nil, err
	}
	if err := nt.Write(out); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	return &PartitionResult{Result: *res, Table: nt, Partition: np, Grown: nt.DiskSize - t.DiskSize}, nil
}

// DecryptPartition writes to out (a new, empty file) the disk image img
// with its partition n decrypted in place and shrunk to the size its
// image token records (or its whole payload): the reverse of
// EncryptPartition.
func DecryptPartition(ctx context.Context, img *os.File, out *os.File, n int, o DecryptOptions) (*PartitionResult, error) {
	dev, p, err := OpenPartition(img, n)
	if err != nil {
		return nil, err
	}
	h, err := volume.ReadHeader(dev)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	l, err := layout(h, p.Size)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	if l.out <= 0 {
		return nil, fmt.Errorf("partition %d holds an empty LUKS2 payload", n)
	}
	size, err := img.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("image size: %w", err)
	}
	t, err := ReadTable(img, size)
	if err != nil {
		return nil, err
	}
	nt, err := t.Resize(n, l.out)
	if err != nil {
		return nil, err
	}
	np, _ := nt.Partition(n)
	if err := copyAround(ctx, img, size, out, t, nt, p, np); err != nil {
		return nil, err
	}
	// out is new and reads as zeros in the partition: zeros of the
	// payload are left as holes.
	res, err := decrypt(ctx, dev, &transfer{dstAt: out, dstOff: p.Start, sparse: true}, o)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	if err := nt.Write(out); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	return &PartitionResult{Result: *res, Table: nt, Partition: np, Grown: nt.DiskSize - t.DiskSize}, nil
}

// copyAround sizes out for the new table nt and copies into it what in
// holds outside partition p (old) / np (new): everything before the
// partition, and what follows both its old and its new end, up to the
// end of the smaller disk. The partition's own space is left as it is
// (its new contents, or zeros), and the tables are written last, over
// the copied ones.
func copyAround(ctx context.Context, in io.ReaderAt, inSize int64, out *os.File, t, nt *partition.Table, p, np partition.Partition) error {
	if err := out.Truncate(nt.DiskSize); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if err := copySparse(ctx, in, out, 0, p.Start); err != nil {
		return err
	}
	from := max(p.End(), np.End())
	return copySparse(ctx, in, out, from, min(inSize, nt.DiskSize))
}

// copySparse copies in[from:to) to the same place in out, leaving holes
// where the input is zero: out is new and reads as zeros there, and disk
// images are mostly unused space.
func copySparse(ctx context.Context, in io.ReaderAt, out io.WriterAt, from, to int64) error {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	for off := from; off < to; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(chunk, to-off)]
		if _, err := in.ReadAt(b, off); err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := out.WriteAt(b, off); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

// DiskInfo describes a partitioned disk image and the LUKS2 headers of
// its encrypted partitions.
type DiskInfo struct {
	Scheme     string          `json:"scheme"` // gpt or dos
	SectorSize int             `json:"sector_size"`
	DiskID     string          `json:"disk_id"` // disk GUID or MBR signature
	Size       int64           `json:"size"`
	Partitions []PartitionInfo `json:"partitions"`
	Warnings   []string        `json:"warnings"`
}

// PartitionInfo is one partition and, if it is LUKS2, its header.
type PartitionInfo struct {
	Number    int    `json:"number"`
	Start     int64  `json:"start"`
	Size      int64  `json:"size"`
	Type      string `json:"type"`
	TypeName  string `json:"type_name,omitempty"`
	Name      string `json:"name,omitempty"`
	UUID      string `json:"partuuid"`
	Bootable  bool   `json:"bootable,omitempty"`
	Extended  bool   `json:"extended,omitempty"`
	Encrypted bool   `json:"encrypted"`
	LUKS      *Info  `json:"luks,omitempty"`
	Error     string `json:"error,omitempty"` // why a LUKS header does not read
}

// InspectDisk describes the partitions of a disk image; it returns an
// error wrapping partition.ErrNoTable when the image has no partition
// table.
func InspectDisk(f *os.File) (*DiskInfo, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("image size: %w", err)
	}
	t, err := ReadTable(f, size)
	if err != nil {
		return nil, err
	}
	di := &DiskInfo{Scheme: t.Scheme, SectorSize: t.SectorSize, DiskID: t.DiskID, Size: size, Partitions: []PartitionInfo{}, Warnings: nonNil(t.Warnings)}
	for _, p := range t.Partitions {
		pi := PartitionInfo{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, TypeName: p.TypeName, Name: p.Name, UUID: p.UUID, Bootable: p.Bootable, Extended: p.Extended}
		dev := &partDevice{f: f, off: p.Start, size: p.Size}
		magic := make([]byte, 6)
		if !p.Extended {
			if _, err := dev.ReadAt(magic, 0); err == nil && string(magic) == "LUKS\xba\xbe" {
				pi.Encrypted = true
				if pi.LUKS, err = Inspect(dev); err != nil {
					pi.Error = err.Error()
				}
			}
		}
		di.Partitions = append(di.Partitions, pi)
	}
	return di, nil
}

// WriteText prints the table, then the header of each encrypted
// partition.
func (d *DiskInfo) WriteText(w io.Writer) error {
	what := "disk GUID"
	if d.Scheme == partition.MBR {
		what = "disk identifier"
	}
	fmt.Fprintf(w, "Partition table: %s, %d-byte sectors, %s %s, %d bytes\n", d.Scheme, d.SectorSize, what, printable(d.DiskID), d.Size)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tSTART\tSIZE\tTYPE\tNAME\tPARTUUID\tCONTENTS")
	for _, p := range d.Partitions {
		typ := p.Type
		if p.TypeName != "" {
			typ = p.TypeName
		}
		name, contents := p.Name, "-"
		if name == "" {
			name = "-"
		}
		switch {
		case p.LUKS != nil:
			contents = "LUKS2 " + printable(p.LUKS.UUID)
		case p.Encrypted:
			contents = "LUKS (unreadable header)"
		}
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%s\t%s\t%s\n", p.Number, p.Start, p.Size, printable(typ), printable(name), printable(p.UUID), contents)
	}
	tw.Flush()
	for _, warn := range d.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", printable(warn))
	}
	for _, p := range d.Partitions {
		if !p.Encrypted {
			continue
		}
		fmt.Fprintf(w, "\nPartition %d:\n", p.Number)
		if p.LUKS == nil {
			fmt.Fprintf(w, "Error: %s\n", printable(p.Error))
			continue
		}
		if err := p.LUKS.WriteText(w); err != nil {
			return err
		}
	}
	return nil
}
