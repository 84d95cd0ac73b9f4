package luks2

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newMemImage formats an in-memory image with one pbkdf2 keyslot.
func newMemImage(t *testing.T, opts FormatOptions) (*memDevice, *Header) {
	t.Helper()
	if opts.DigestIterations == 0 {
		opts.DigestIterations = 1000
	}
	if opts.DataOffset == 0 {
		opts.DataOffset = 2 << 20
	}
	h, vk, err := Format(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	dev := newMemDevice(int(opts.DataOffset))
	if _, err := h.AddKeyslot(dev, vk, []byte("pass"), fastPBKDF2); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(dev); err != nil {
		t.Fatal(err)
	}
	return dev, h
}

func flip(dev *memDevice, off int) { dev.data[off] ^= 0x5a }

func TestDamagedCopies(t *testing.T) {
	const md = 0x4000
	tests := []struct {
		name    string
		damage  func(*memDevice)
		warning string // "" means Read must fail
	}{
		{"clean", func(*memDevice) {}, "-"},
		{"primary JSON", func(d *memDevice) { flip(d, binHeaderSize+20) }, "primary header is damaged"},
		{"primary JSON padding", func(d *memDevice) { flip(d, md-1) }, "primary header is damaged"},
		{"primary magic", func(d *memDevice) { flip(d, 0) }, "primary header is damaged"},
		{"primary hdr_size", func(d *memDevice) { flip(d, offHdrSize+6) }, "primary header is damaged"},
		{"primary checksum", func(d *memDevice) { flip(d, offCsum) }, "primary header is damaged"},
		{"secondary JSON", func(d *memDevice) { flip(d, md+binHeaderSize+20) }, "secondary header is damaged"},
		{"secondary magic", func(d *memDevice) { flip(d, md) }, "secondary header is damaged"},
		{"both JSON", func(d *memDevice) { flip(d, binHeaderSize+20); flip(d, md+binHeaderSize+20) }, ""},
		{"both magic", func(d *memDevice) { flip(d, 0); flip(d, md) }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, orig := newMemImage(t, FormatOptions{})
			tc.damage(dev)
			h, err := Read(dev)
			if tc.warning == "" {
				if err == nil {
					t.Fatal("Read succeeded with both copies damaged")
				}
				if !errors.Is(err, ErrInvalidHeader) && !errors.Is(err, ErrNotLUKS2) {
					t.Errorf("err = %v, want ErrInvalidHeader or ErrNotLUKS2", err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			w := strings.Join(h.Warnings(), "; ")
			if tc.warning == "-" {
				if w != "" {
					t.Errorf("warnings on a clean image: %s", w)
				}
			} else if !strings.Contains(w, tc.warning) {
				t.Errorf("warnings = %q, want %q", w, tc.warning)
			}
			if h.UUID() != orig.UUID() || h.SeqID() != orig.SeqID() {
				t.Errorf("read %s seqid %d, want %s seqid %d", h.UUID(), h.SeqID(), orig.UUID(), orig.SeqID())
			}
			vk, _, err := h.OpenAny(dev, []byte("pass"))
			if err != nil {
				t.Fatalf("OpenAny: %v", err)
			}
			vk.Wipe()
			// Writing repairs the damaged copy.
			if err := h.Write(dev); err != nil {
				t.Fatalf("Write: %v", err)
			}
			h2, err := Read(dev)
			if err != nil || len(h2.Warnings()) != 0 {
				t.Fatalf("after repair: %v, warnings %q", err, h2.Warnings())
			}
		})
	}
}

// The secondary of a 4 MiB header is only found by probing every
// allowed offset when the primary's magic is gone.
func TestProbeSecondaryOffsets(t *testing.T) {
	dir := untarxz(t, "luks2_mda_images.tar.xz")
	for _, kib := range []int{16, 512, 4096} {
		path := filepath.Join(dir, "test_image_"+itoa(kib))
		f := openFile(t, path)
		if _, err := f.WriteAt([]byte("XXXX"), 0); err != nil {
			t.Fatal(err)
		}
		h, err := Read(f)
		if err != nil {
			t.Fatalf("%d KiB: Read: %v", kib, err)
		}
		if w := strings.Join(h.Warnings(), ";"); !strings.Contains(w, "primary header is damaged") {
			t.Errorf("%d KiB: warnings %q", kib, w)
		}
		vk, _, err := h.OpenAny(f, []byte(mdaPass))
		if err != nil {
			t.Fatalf("%d KiB: %v", kib, err)
		}
		if !vk.Equal(hexKey(t, mdaVK)) {
			t.Errorf("%d KiB: wrong volume key", kib)
		}
		vk.Wipe()
	}
}

func itoa(n int) string {
	b := []byte{}
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestCompatImageDamagedPrimary(t *testing.T) {
	path := unxz(t, "compatimage2.img.xz")
	f := openFile(t, path)
	if _, err := f.WriteAt([]byte{'X'}, binHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	h := readHeader(t, f)
	if w := strings.Join(h.Warnings(), ";"); !strings.Contains(w, "primary header is damaged") || !strings.Contains(w, "checksum") {
		t.Errorf("warnings = %q", w)
	}
	vk, err := h.OpenKeyslot(f, 0, []byte(compatPass0))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	if !vk.Equal(hexKey(t, compatVK)) {
		t.Error("wrong volume key via the secondary header")
	}
	// Damage the secondary too: a clear, one-line error.
	if _, err := f.WriteAt([]byte{'X'}, 0x4000+binHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	_, err = Read(f)
	if !errors.Is(err, ErrInvalidHeader) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("both damaged: err = %v", err)
	}
}

func TestNotLUKS2(t *testing.T) {
	if _, err := Read(newMemDevice(1 << 20)); !errors.Is(err, ErrNotLUKS2) {
		t.Errorf("zeros: err = %v, want ErrNotLUKS2", err)
	}
	luks1 := newMemDevice(1 << 20)
	copy(luks1.data, "LUKS\xba\xbe\x00\x01")
	if _, err := Read(luks1); !errors.Is(err, ErrNotLUKS2) {
		t.Errorf("LUKS1: err = %v, want ErrNotLUKS2", err)
	}
	if _, err := Read(newMemDevice(100)); err == nil {
		t.Error("100-byte device read as LUKS2")
	}
}

// failingDevice fails every write at or after a given offset range, to
// stand for a crash in the middle of Write.
type failingDevice struct {
	*memDevice
	failAt int64
	land   int // bytes of the failing write that still land
}

func (d *failingDevice) WriteAt(p []byte, off int64) (int, error) {
	if off == d.failAt {
		d.memDevice.WriteAt(p[:d.land], off)
		return 0, errors.New("crash")
	}
	return d.memDevice.WriteAt(p, off)
}

func TestInterruptedWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failAt  int64
		land    int    // a torn write: the first sector is the new binary header, over the old JSON
		wantSeq uint64 // the copy Read must pick
		token   bool   // whether the new token is there
		warning string
	}{
		{"torn secondary", 0x4000, 512, 1, false, "secondary header is damaged"},
		{"torn primary", 0, 512, 2, true, "primary header is damaged"},
		{"before primary", 0, 0, 2, true, "primary header is older"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, h := newMemImage(t, FormatOptions{})
			if err := h.SetToken(3, []byte(`{"type":"x","keyslots":["0"]}`)); err != nil {
				t.Fatal(err)
			}
			if err := h.Write(&failingDevice{dev, tc.failAt, tc.land}); err == nil {
				t.Fatal("Write succeeded on a failing device")
			}
			h2, err := Read(dev)
			if err != nil {
				t.Fatalf("Read after crash: %v", err)
			}
			if h2.SeqID() != tc.wantSeq {
				t.Errorf("seqid = %d, want %d", h2.SeqID(), tc.wantSeq)
			}
			if _, err := h2.Token(3); (err == nil) != tc.token {
				t.Errorf("token present = %v, want %v", err == nil, tc.token)
			}
			if w := strings.Join(h2.Warnings(), ";"); !strings.Contains(w, tc.warning) {
				t.Errorf("warnings = %q, want %q", w, tc.warning)
			}
			vk, _, err := h2.OpenAny(dev, []byte("pass"))
			if err != nil {
				t.Fatal(err)
			}
			vk.Wipe()
			// The interrupted header can be written again.
			if err := h2.Write(dev); err != nil {
				t.Errorf("Write after crash: %v", err)
			}
		})
	}
}

func TestConcurrentUpdate(t *testing.T) {
	dev, _ := newMemImage(t, FormatOptions{})
	a, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetLabel("a", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(dev); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dev); !errors.Is(err, ErrConcurrentUpdate) {
		t.Errorf("stale Write: err = %v, want ErrConcurrentUpdate", err)
	}
	if err := a.Write(dev); err != nil {
		t.Errorf("second Write of the fresh header: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	// *os.File is a WriterAtSyncer; a header written to it reads back.
	h, vk, err := Format(FormatOptions{DigestIterations: 1000, DataOffset: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	h2 := readHeader(t, f)
	if h2.UUID() != h.UUID() || h2.SeqID() != 1 {
		t.Errorf("read back %s seqid %d", h2.UUID(), h2.SeqID())
	}
}
