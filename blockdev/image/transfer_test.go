package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"kmsagent/agent/tstest"
)

// sparseFile writes a file of size bytes that is random in the given
// data spans and a hole elsewhere, and returns it open with its content.
func sparseFile(t *testing.T, size int64, data []span) (*os.File, []byte) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse.raw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	want := make([]byte, size)
	for _, d := range data {
		b := randomData(t, int(d.len))
		copy(want[d.off:], b)
		if _, err := f.WriteAt(b, d.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f, want
}

// TestHoles: an input with holes (whole chunks, parts of chunks, a hole
// at the start and at the end) is read as zeros and encrypted like any
// zeros, so the image is exactly what the same bytes without holes give;
// decrypt into a file leaves the zeros as holes again and gives the same
// bytes.
func TestHoles(t *testing.T) {
	f := newFixture(t)
	const size = 5*chunkSize + 3*4096 + 100
	layouts := map[string][]span{
		"chunk holes":    {{chunkSize, 8192}, {3*chunkSize + 4096, chunkSize}},
		"leading hole":   {{4*chunkSize + 100, 5000}},
		"trailing hole":  {{0, 100}},
		"all hole":       nil,
		"no hole":        {{0, size}},
		"unaligned tail": {{0, chunkSize}, {size - 1, 1}},
	}
	for name, data := range layouts {
		t.Run(name, func(t *testing.T) {
			in, want := sparseFile(t, size, data)
			img := filepath.Join(t.TempDir(), "out.img")
			out, err := CreateOutput(img, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			res, err := EncryptFile(ctx, in, out.File, f.opts(4096, size))
			if err != nil {
				out.Abort()
				t.Fatal(err)
			}
			if err := out.Commit(); err != nil {
				t.Fatal(err)
			}
			if res.InputSize != size || res.PayloadOffset != 16<<20 {
				t.Fatalf("result %+v", res)
			}
			raw, _ := os.ReadFile(img)
			if int64(len(raw)) != res.PayloadOffset+res.PayloadSize {
				t.Fatalf("image is %d bytes, result %+v", len(raw), res)
			}
			// A hole became encrypted zeros, not zeros: sector 0 of a
			// hole at the start reads as ciphertext.
			if bytes.Equal(raw[16<<20:16<<20+4096], make([]byte, 4096)) {
				t.Fatal("a hole was left as zeros in the payload")
			}
			if plain := independentDecrypt(t, f, img, 4096); !bytes.Equal(plain[:size], want) || !allZero(plain[size:]) {
				t.Fatal("x/crypto/xts does not decrypt the image of an input with holes")
			}
			back := filepath.Join(t.TempDir(), "back.raw")
			dst, err := os.Create(back)
			if err != nil {
				t.Fatal(err)
			}
			src, _ := os.Open(img)
			dres, err := DecryptFile(ctx, src, dst, DecryptOptions{KMS: f.kms})
			src.Close()
			dst.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(back)
			if !bytes.Equal(got, want) || dres.InputSize != size {
				t.Fatalf("decrypt gave %d bytes, first difference at %d", len(got), firstDiff(got, want))
			}
			if stream, _ := decryptFile(t, img, DecryptOptions{KMS: f.kms}); !bytes.Equal(stream, want) {
				t.Fatal("decrypt to a stream differs")
			}
			// Where the file system keeps holes, the decrypted file has
			// them where the input had whole chunks of zeros.
			var inSt, outSt syscall.Stat_t
			syscall.Fstat(int(in.Fd()), &inSt)
			syscall.Stat(back, &outSt)
			if inSt.Blocks*512 < size && name == "chunk holes" && outSt.Blocks*512 >= size {
				t.Fatalf("decrypted file is not sparse: %d blocks for %d bytes", outSt.Blocks, size)
			}
		})
	}
}

func TestHoleSpans(t *testing.T) {
	in, _ := sparseFile(t, 4*chunkSize, []span{{chunkSize, 4096}})
	holes := sourceHints(in, 0, 4*chunkSize)
	if len(holes) == 0 {
		t.Skip("the file system of the test directory does not report holes")
	}
	for _, tt := range []struct {
		off, n int64
		hole   bool
	}{
		{0, chunkSize, true},
		{0, chunkSize + 1, false},
		{chunkSize, chunkSize, false},
		{2 * chunkSize, 2 * chunkSize, true},
		{4*chunkSize - 10, 10, true},
	} {
		if got := inHole(holes, tt.off, tt.n); got != tt.hole {
			t.Errorf("inHole(%v, %d, %d) = %v", holes, tt.off, tt.n, got)
		}
	}
}

func TestAllZero(t *testing.T) {
	for _, tt := range []struct {
		b    []byte
		zero bool
	}{
		{nil, true},
		{make([]byte, 13), true},
		{append(make([]byte, 12), 1), false},
		{append(make([]byte, 7), 1, 0, 0), false},
		{append([]byte{1}, make([]byte, 100)...), false},
	} {
		if got := allZero(tt.b); got != tt.zero {
			t.Errorf("allZero(%v) = %v", tt.b, got)
		}
	}
}

// failingWriterAt fails every write at or after offset from. Like any
// io.WriterAt, it takes parallel calls.
type failingWriterAt struct {
	from   int64
	mu     sync.Mutex
	writes []int64 // offsets written
}

func (w *failingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off+int64(len(p)) > w.from {
		return 0, errors.New("disk full")
	}
	w.writes = append(w.writes, off)
	return len(p), nil
}

// TestEncryptAtFailureWritesNoHeader: the header goes out last, so a
// run that fails on the payload leaves nothing that opens as LUKS.
func TestEncryptAtFailureWritesNoHeader(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, 4*chunkSize+5)
	w := &failingWriterAt{from: 16<<20 + 2*chunkSize}
	_, err := EncryptAt(ctx, bytes.NewReader(data), int64(len(data)), w, 0, f.opts(4096, int64(len(data))))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("EncryptAt: %v", err)
	}
	for _, off := range w.writes {
		if off < 16<<20 {
			t.Fatalf("something was written at %d, in the header region", off)
		}
	}
}

// TestEncryptAtOffset: an image placed inside a larger file (as a
// partition layer does) decrypts from there, and nothing outside it is
// touched.
func TestEncryptAtOffset(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, chunkSize+4096*3)
	const off = 1 << 20
	path := filepath.Join(t.TempDir(), "disk.img")
	disk, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	res, err := EncryptAt(ctx, bytes.NewReader(data), int64(len(data)), disk, off, f.opts(4096, int64(len(data))))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if int64(len(raw)) != off+res.PayloadOffset+res.PayloadSize || !bytes.Equal(raw[:off], make([]byte, off)) {
		t.Fatalf("disk is %d bytes for %+v", len(raw), res)
	}
	img := filepath.Join(t.TempDir(), "part.img")
	os.WriteFile(img, raw[off:], 0o600)
	if got, _ := decryptFile(t, img, DecryptOptions{KMS: f.kms}); !bytes.Equal(got, data) {
		t.Fatal("the image at an offset does not decrypt")
	}
}

// shrinkingReaderAt claims more than it has, as a file truncated while
// it is read.
type shrinkingReaderAt struct{ b []byte }

func (r shrinkingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestEncryptAtInputShrinks(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, 3*chunkSize)
	var out bytes.Buffer
	_, err := EncryptAt(ctx, shrinkingReaderAt{data}, 4*chunkSize, discardAt{&out}, 0, f.opts(4096, 4*chunkSize))
	if err == nil || !strings.Contains(err.Error(), "changed while being read") {
		t.Fatalf("EncryptAt of a shrinking input: %v", err)
	}
}

type discardAt struct{ io.Writer }

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// TestOutputOnFullDisk: an encrypt or decrypt that runs out of space
// leaves nothing in the output directory: no image under its name and
// no temporary file.
func TestOutputOnFullDisk(t *testing.T) {
	tstest.NeedRoot(t, "to mount a small tmpfs")
	f := newFixture(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=20m"); err != nil {
		tstest.Unavailable(t, "mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	src := filepath.Join(t.TempDir(), "in.raw")
	data := randomData(t, 8<<20)
	os.WriteFile(src, data, 0o600)
	for _, size := range []int64{int64(len(data)), -1} { // preallocated, and a stream
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			in, _ := os.Open(src)
			defer in.Close()
			out, err := CreateOutput(filepath.Join(dir, "out.img"), 0o644)
			if err != nil {
				t.Fatal(err)
			}
			var r io.Reader = in
			if size < 0 {
				r = io.MultiReader(in) // no ReaderAt: read as a stream
			}
			_, err = EncryptFile(ctx, r, out.File, f.opts(4096, size))
			if err == nil {
				err = out.Commit()
			} else {
				out.Abort()
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("encrypt onto a full disk: %v", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}
