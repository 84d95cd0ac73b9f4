package contentenc

import (
	"errors"
	"reflect"
	"testing"
)

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		plain, cipher uint64
	}{
		{0, 0},
		{1, 18 + 1 + 32},                         // 51, as in gocryptfs's file-format.md
		{4095, 18 + 4095 + 32},                   //
		{4096, 18 + 4128},                        //
		{4097, 18 + 4128 + 1 + 32},               //
		{5000, 5082},                             // file-format.md
		{3 << 20, 18 + 768*4128},                 // 3 MiB
		{1<<40 + 1, 18 + (1<<40)/4096*4128 + 33}, // past 32 bits
	} {
		if got := CipherSize(tc.plain); got != tc.cipher {
			t.Errorf("CipherSize(%d) = %d, want %d", tc.plain, got, tc.cipher)
		}
		if got, err := PlainSize(tc.cipher); err != nil || got != tc.plain {
			t.Errorf("PlainSize(%d) = %d, %v; want %d", tc.cipher, got, err, tc.plain)
		}
	}
}

func TestPlainSizeEdges(t *testing.T) {
	ok := map[uint64]uint64{
		HeaderLen:                 0, // header only: interrupted first write
		HeaderLen + CipherBS:      DefaultBS,
		HeaderLen + CipherBS + 33: DefaultBS + 1,
		HeaderLen + 2*CipherBS:    2 * DefaultBS,
	}
	for c, want := range ok {
		if got, err := PlainSize(c); err != nil || got != want {
			t.Errorf("PlainSize(%d) = %d, %v; want %d", c, got, err, want)
		}
	}
	for _, c := range []uint64{1, 17, 19, 50, HeaderLen + Overhead, HeaderLen + CipherBS + 1, HeaderLen + CipherBS + Overhead} {
		if got, err := PlainSize(c); !errors.Is(err, ErrSize) {
			t.Errorf("PlainSize(%d) = %d, %v; want ErrSize", c, got, err)
		}
	}
}

func TestOffsets(t *testing.T) {
	for _, tc := range []struct{ off, block, cipherOff uint64 }{
		{0, 0, 18},
		{4095, 0, 18},
		{4096, 1, 18 + 4128},
		{10000, 2, 18 + 2*4128},
	} {
		if b := BlockNo(tc.off); b != tc.block {
			t.Errorf("BlockNo(%d) = %d, want %d", tc.off, b, tc.block)
		}
		if c := CipherOff(tc.block); c != tc.cipherOff {
			t.Errorf("CipherOff(%d) = %d, want %d", tc.block, c, tc.cipherOff)
		}
	}
}

func TestExplodeRange(t *testing.T) {
	for _, tc := range []struct {
		name        string
		off, length uint64
		want        []IntraBlock
	}{
		{"empty", 100, 0, nil},
		{"inside one block", 10, 20, []IntraBlock{{0, 10, 20}}},
		{"one full block", 4096, 4096, []IntraBlock{{1, 0, 4096}}},
		{"to block end", 4000, 96, []IntraBlock{{0, 4000, 96}}},
		{"across a boundary", 4000, 200, []IntraBlock{{0, 4000, 96}, {1, 0, 104}}},
		{"partial full partial", 1, 8192, []IntraBlock{{0, 1, 4095}, {1, 0, 4096}, {2, 0, 1}}},
		{"end of uint64 space", 1<<64 - 10, 100, []IntraBlock{{(1<<64 - 10) / 4096, 4096 - 10, 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExplodeRange(tc.off, tc.length)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ExplodeRange(%d, %d) = %v, want %v", tc.off, tc.length, got, tc.want)
			}
		})
	}
	b := IntraBlock{BlockNo: 2, Skip: 5, Length: 10}
	if !b.IsPartial() || b.PlainOff() != 2*4096+5 || b.CipherOff() != 18+2*4128 {
		t.Fatalf("IntraBlock helpers wrong: %v", b)
	}
	if (IntraBlock{BlockNo: 1, Length: DefaultBS}).IsPartial() {
		t.Fatal("full block reported partial")
	}
}

func FuzzPlainSize(f *testing.F) {
	for _, c := range []uint64{0, 1, 18, 19, 50, 51, 4146, 4147, 4179, 1 << 62, 1<<64 - 1} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, c uint64) {
		p, err := PlainSize(c)
		if err != nil {
			if !errors.Is(err, ErrSize) {
				t.Fatalf("error does not wrap ErrSize: %v", err)
			}
			return
		}
		if c == HeaderLen {
			if p != 0 {
				t.Fatalf("header-only file has size %d", p)
			}
			return
		}
		if back := CipherSize(p); back != c {
			t.Fatalf("PlainSize(%d) = %d but CipherSize(%d) = %d", c, p, p, back)
		}
	})
}
