package luks2

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// imageFrom lays out both metadata copies of baseJSON-like text on a
// device, lets mod change the primary copy (binary header and JSON area),
// and fixes the checksums afterwards, so that the check under test is the
// one that fires, not the checksum.
func imageFrom(t *testing.T, text string, mod func(bin, area []byte)) *memDevice {
	t.Helper()
	const md = 0x4000
	dev := newMemDevice(4 << 20)
	for _, secondary := range []bool{false, true} {
		off := 0
		bh := binHeader{version: 2, hdrSize: md, seqid: 3, csumAlg: "sha256", uuid: "28632274-8c8a-493f-835b-da802e1c576b"}
		if secondary {
			off = md
			bh.hdrOffset = md
		}
		img := dev.data[off : off+md]
		copy(img, bh.encode(secondary))
		copy(img[binHeaderSize:], text)
		if !secondary && mod != nil {
			mod(img[:binHeaderSize], img[binHeaderSize:])
		}
		sum := checksum(sha256.New, img[:binHeaderSize], img[binHeaderSize:])
		copy(img[offCsum:], sum)
	}
	return dev
}

func TestBinaryHeaderChecks(t *testing.T) {
	tests := []struct {
		name string
		mod  func(bin, area []byte)
		want string // in the primary's warning
	}{
		{"hdr_offset", func(b, _ []byte) { binary.BigEndian.PutUint64(b[offHdrOffset:], 512) }, "hdr_offset 512 does not match"},
		{"hdr_size not allowed", func(b, _ []byte) { binary.BigEndian.PutUint64(b[offHdrSize:], 0x5000) }, "hdr_size 20480 is not an allowed"},
		{"hdr_size other allowed", func(b, _ []byte) { binary.BigEndian.PutUint64(b[offHdrSize:], 0x8000) }, "checksum mismatch"},
		{"checksum algorithm", func(b, _ []byte) { copy(b[offCsumAlg:], "md5\x00\x00\x00") }, `checksum algorithm "md5"`},
		{"JSON not at start", func(_, a []byte) { copy(a, " {") }, "does not start with '{'"},
		{"garbage after JSON", func(_, a []byte) { a[len(a)-10] = 'x' }, "byte 0x78 after the JSON text"},
		{"no NUL", func(_, a []byte) {
			for i := len(baseJSON); i < len(a); i++ {
				a[i] = ' '
			}
		}, "no terminating NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Read(imageFrom(t, baseJSON, tc.mod))
			if err != nil {
				t.Fatalf("Read: %v (the secondary is intact)", err)
			}
			w := strings.Join(h.Warnings(), ";")
			if !strings.Contains(w, "primary header is damaged") || !strings.Contains(w, tc.want) {
				t.Errorf("warnings = %q, want %q", w, tc.want)
			}
		})
	}
}

func TestHigherSeqIDWins(t *testing.T) {
	withSeq := func(seq uint64) func(b, _ []byte) {
		return func(b, _ []byte) { binary.BigEndian.PutUint64(b[offSeqID:], seq) }
	}
	for _, tc := range []struct {
		primary uint64
		want    uint64
		warning string
	}{
		{3, 3, ""},
		{9, 9, "secondary header is older"},
		{1, 3, "primary header is older"},
	} {
		h, err := Read(imageFrom(t, baseJSON, withSeq(tc.primary)))
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Join(h.Warnings(), ";")
		if h.SeqID() != tc.want || (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
			t.Errorf("primary seqid %d: got seqid %d, warnings %q; want %d, %q", tc.primary, h.SeqID(), w, tc.want, tc.warning)
		}
	}
}

func TestBinaryFieldsRoundTrip(t *testing.T) {
	h, vk, err := Format(FormatOptions{
		UUID: "0b5c2a4e-59b7-4d1c-9d0e-6f1a2b3c4d5e", Label: strings.Repeat("L", 47), Subsystem: "sub",
		DigestIterations: 1000, DataOffset: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	vk.Wipe()
	dev := newMemDevice(1 << 20)
	if err := h.Write(dev); err != nil {
		t.Fatal(err)
	}
	if string(dev.data[:6]) != "LUKS\xba\xbe" || string(dev.data[0x4000:0x4006]) != "SKUL\xba\xbe" {
		t.Errorf("magics: %q %q", dev.data[:6], dev.data[0x4000:0x4006])
	}
	if got := binary.BigEndian.Uint64(dev.data[0x4000+offHdrOffset:]); got != 0x4000 {
		t.Errorf("secondary hdr_offset = %d", got)
	}
	if string(dev.data[offSalt:offSalt+saltLen]) == string(dev.data[0x4000+offSalt:0x4000+offSalt+saltLen]) {
		t.Error("both copies have the same salt")
	}
	h2, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	if h2.UUID() != h.UUID() || h2.Label() != h.Label() || h2.Subsystem() != "sub" || h2.SeqID() != 1 {
		t.Errorf("read back %q %q %q seqid %d", h2.UUID(), h2.Label(), h2.Subsystem(), h2.SeqID())
	}
	if err := h2.SetLabel(strings.Repeat("L", 48), ""); err == nil {
		t.Error("48-byte label accepted")
	}
}

func TestFormatOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts FormatOptions
	}{
		{"bad uuid", FormatOptions{UUID: "not-a-uuid"}},
		{"bad metadata size", FormatOptions{MetadataSize: 0x5000}},
		{"bad sector size", FormatOptions{SectorSize: 1000}},
		{"sector size 8192", FormatOptions{SectorSize: 8192}},
		{"data offset inside metadata", FormatOptions{DataOffset: 0x4000}},
		{"data offset unaligned", FormatOptions{DataOffset: (16 << 20) + 512}},
		{"digest iterations", FormatOptions{DigestIterations: 10}},
		{"key size", FormatOptions{KeySize: 8}},
		{"long label", FormatOptions{Label: strings.Repeat("x", 48)}},
		{"keyslots too large", FormatOptions{KeyslotsSize: 16 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.DigestIterations == 0 {
				tc.opts.DigestIterations = 1000
			}
			if _, _, err := Format(tc.opts); err == nil {
				t.Error("accepted")
			}
		})
	}
	h, vk, err := Format(FormatOptions{DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	seg, _ := h.Segment()
	if h.MetadataSize() != 16<<10 || h.KeyslotsSize() != 16<<20-32<<10 || seg.Offset != 16<<20 ||
		seg.Encryption != "aes-xts-plain64" || seg.SectorSize != 512 || vk.Len() != 64 {
		t.Errorf("defaults: metadata %d keyslots %d segment %+v key %d", h.MetadataSize(), h.KeyslotsSize(), seg, vk.Len())
	}
	if _, err := h.VerifyVolumeKey(vk); err != nil {
		t.Errorf("VerifyVolumeKey: %v", err)
	}
	other := hexKey(t, mdaVK+mdaVK)
	if _, err := h.VerifyVolumeKey(other); !errors.Is(err, ErrWrongVolumeKey) {
		t.Errorf("VerifyVolumeKey(other) = %v", err)
	}
}

// TestDataOverlapsHeader: a data segment at offset 0 is valid for a
// detached header, but on the device that holds the header the data
// would overwrite it; Segment and CheckAttached refuse it.
func TestDataOverlapsHeader(t *testing.T) {
	h, err := Read(imageFrom(t, baseJSON, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CheckAttached(); err != nil {
		t.Fatalf("CheckAttached of a header followed by its data: %v", err)
	}
	seg, err := h.Segment()
	if err != nil || seg.MetadataEnd != 4194304 || seg.Offset != 4194304 {
		t.Fatalf("Segment = %+v, %v; want MetadataEnd 4194304", seg, err)
	}

	h, err = Read(imageFrom(t, strings.Replace(baseJSON, `"offset":"4194304"`, `"offset":"0"`, 1), nil))
	if err != nil {
		t.Fatalf("Read of a detached header (cryptsetup accepts it): %v", err)
	}
	const want = "segment 0 starts at offset 0, inside the metadata and keyslot area that ends at 4194304"
	if err := h.CheckAttached(); !errors.Is(err, ErrHeaderOverlap) || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckAttached: %v, want ErrHeaderOverlap with %q", err, want)
	}
	if _, err := h.Segment(); !errors.Is(err, ErrHeaderOverlap) {
		t.Errorf("Segment: %v, want ErrHeaderOverlap", err)
	}
}
