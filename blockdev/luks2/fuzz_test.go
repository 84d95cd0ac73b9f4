package luks2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
)

// seedHeader returns the first sector of the binary header and the JSON
// text of a fresh header with a keyslot and a token.
func seedHeader(f *testing.F) (bin, text []byte) {
	h, vk, err := Format(FormatOptions{DigestIterations: 1000, DataOffset: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	defer vk.Wipe()
	dev := newMemDevice(1 << 20)
	if _, err := h.AddKeyslot(dev, vk, []byte("p"), fastPBKDF2); err != nil {
		f.Fatal(err)
	}
	if err := h.SetToken(0, []byte(`{"type":"t","keyslots":["0"]}`)); err != nil {
		f.Fatal(err)
	}
	if err := h.Write(dev); err != nil {
		f.Fatal(err)
	}
	return bytes.Clone(dev.data[:512]), bytes.Clone(h.JSON())
}

// fuzzImage builds a device from a fuzzed binary header and JSON text:
// the primary copy at 0 and, with mirror, a matching secondary at 16 KiB.
// With fix the checksums are recomputed, so that fuzzed JSON gets past
// them. Inputs stay small (a sector and the JSON text), which keeps the
// fuzzer's minimisation fast.
func fuzzImage(bin, text []byte, mirror, fix bool) []byte {
	const md = 0x4000
	img := make([]byte, 2*md+4096)
	copy(img[:512], bin)
	copy(img[binHeaderSize:md], text)
	if mirror {
		copy(img[md:], img[:md])
		copy(img[md:], magicSecondary)
		binary.BigEndian.PutUint64(img[md+offHdrOffset:], md)
	}
	if fix {
		fixChecksum(img, 0)
		fixChecksum(img, md)
	}
	return img
}

// fixChecksum recomputes the checksum of the copy at off, if its hdr_size
// makes sense.
func fixChecksum(img []byte, off int) {
	size := binary.BigEndian.Uint64(img[off+offHdrSize:])
	if !validMetadataSize(size) || uint64(len(img)) < uint64(off)+size {
		return
	}
	copy(img[off+offCsum:], checksum(sha256.New, img[off:off+binHeaderSize], img[off+binHeaderSize:off+int(size)]))
}

func FuzzReadHeader(f *testing.F) {
	bin, text := seedHeader(f)
	f.Add(bin, text, true, true)
	f.Add(bin, text, false, true)
	f.Add(bin, text, true, false)
	f.Add(bin, []byte(baseJSON), true, true)
	// Headers cryptsetup refuses, and values that must not wrap.
	for _, edit := range [][2]string{
		{`"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(30, "") + `}}`},
		{`"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(29, "") + `}}`},
		{`"encryption":"aes-cbc-essiv:sha256","sector_size"`, `"encryption":"","sector_size"`},
		{`"size":"dynamic"`, `"size":"18446744073705357312"`},
		{`"size":"dynamic"`, `"size":"9223372036854775808"`},
		{`"offset":"4194304"`, `"offset":"9223372036854775808"`},
		{`"offset":"4194304"`, `"offset":"0"`},
		{`"iv_tweak":"0"`, `"iv_tweak":"18446744073709551615"`},
	} {
		f.Add(bin, []byte(strings.Replace(baseJSON, edit[0], edit[1], 1)), true, true)
	}
	f.Add(bin, []byte(reencryptJSON), true, true)
	f.Add(bin, []byte(strings.Replace(reencryptJSON, `"mode":"reencrypt"`, `"mode":""`, 1)), true, true)
	f.Fuzz(func(t *testing.T, bin, text []byte, mirror, fix bool) {
		img := fuzzImage(bin, text, mirror, fix)
		h, err := Read(bytes.NewReader(img))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		// Whatever was accepted can be written and reads back the same.
		dev := &memDevice{data: img}
		if err := h.Write(dev); err != nil {
			if len(h.Requirements()) > 0 {
				return
			}
			t.Fatalf("Write of an accepted header: %v", err)
		}
		h2, err := Read(dev)
		if err != nil {
			t.Fatalf("Read after Write: %v", err)
		}
		if !bytes.Equal(h2.JSON(), h.JSON()) || h2.UUID() != h.UUID() || len(h2.Warnings()) != 0 {
			t.Fatalf("round trip changed the header:\n%s\n%s\n%q", h.JSON(), h2.JSON(), h2.Warnings())
		}
	})
}

func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(baseJSON))
	f.Add([]byte(strings.Replace(baseJSON, `"tokens":{}`, `"tokens":{"3":{"type":"x","keyslots":["1"],"a":[{}]}}`, 1)))
	f.Add([]byte(strings.Replace(baseJSON, `"size":"dynamic"`, `"size":"4096"`, 1)))
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{}}`))
	f.Fuzz(func(t *testing.T, text []byte) {
		m, err := parseMetadata(text)
		if err == nil {
			err = m.validate(0x4000)
		}
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		out := m.root.marshal()
		m2, err := parseMetadata(out)
		if err == nil {
			err = m2.validate(0x4000)
		}
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if again := m2.root.marshal(); !bytes.Equal(again, out) {
			t.Fatalf("not stable:\n%s\n%s", out, again)
		}
	})
}
