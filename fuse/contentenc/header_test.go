package contentenc

import (
	"bytes"
	"errors"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h, err := RandomHeader()
	if err != nil {
		t.Fatal(err)
	}
	b := h.Pack()
	if len(b) != HeaderLen || b[0] != 0 || b[1] != CurrentVersion || !bytes.Equal(b[2:], h.ID[:]) {
		t.Fatalf("Pack = %x", b)
	}
	back, err := ParseHeader(b)
	if err != nil || back != h {
		t.Fatalf("ParseHeader = %v, %v", back, err)
	}
	h2, _ := RandomHeader()
	if h2 == h {
		t.Fatal("two random headers are equal")
	}
}

func TestParseHeaderRejects(t *testing.T) {
	id := testFileID()
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short", append([]byte{0, 2}, id[:15]...)},
		{"long", append(append([]byte{0, 2}, id...), 0)},
		{"version 1", append([]byte{0, 1}, id...)},
		{"version 3", append([]byte{0, 3}, id...)},
		{"little endian 2", append([]byte{2, 0}, id...)},
		{"all-zero", make([]byte, HeaderLen)},
		{"all-zero id", append([]byte{0, 2}, make([]byte, 16)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := ParseHeader(tc.in); !errors.Is(err, ErrHeader) {
				t.Fatalf("ParseHeader = %v, %v; want ErrHeader", h, err)
			}
		})
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(append([]byte{0, 2}, testFileID()...))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrHeader) {
				t.Fatalf("error does not wrap ErrHeader: %v", err)
			}
			return
		}
		if !bytes.Equal(h.Pack(), b) {
			t.Fatalf("Pack(ParseHeader(%x)) = %x", b, h.Pack())
		}
	})
}
