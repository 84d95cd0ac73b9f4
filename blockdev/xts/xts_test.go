package xts

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// sectorNumbers covers small numbers, every byte of the 64-bit number and
// the top bit, which the tweak must carry into its second 32-bit lane.
var sectorNumbers = []uint64{
	0, 1, 0xff, 0x100, 0xdeadbeef, 1 << 32, 1<<63 - 1, 1 << 63,
	0x8000000080000000, 0xfedcba9876543210, ^uint64(0),
}

// sectorSizes includes sizes that are not a multiple of 128 bytes, which
// exercise the assembly's one-block tail.
var sectorSizes = []int{16, 48, 128, 144, 256, 512, 768, 4096, 4096 + 112}

func TestMatchesXCrypto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, im := range impls(t) {
		for _, keyLen := range []int{32, 64} {
			for _, size := range sectorSizes {
				t.Run(fmt.Sprintf("%s/key%d/sector%d", im.name, keyLen, size), func(t *testing.T) {
					for range 8 {
						key := randBytes(rng, keyLen)
						c := mustCipher(t, key, im)
						ref := reference(t, key)
						pt := randBytes(rng, size)
						for _, sector := range append(sectorNumbers, rng.Uint64()) {
							compareSector(t, c, ref, pt, sector)
						}
					}
				})
			}
		}
	}
}

// compareSector checks one sector against x/crypto/xts both ways, with
// separate and with identical (in-place) buffers.
func compareSector(t *testing.T, c *Cipher, ref interface {
	Encrypt(ct, pt []byte, sector uint64)
}, pt []byte, sector uint64) {
	t.Helper()
	want := make([]byte, len(pt))
	ref.Encrypt(want, pt, sector)

	got := make([]byte, len(pt))
	c.EncryptSector(got, pt, sector)
	if !bytes.Equal(got, want) {
		t.Fatalf("sector %#x: ciphertext differs from x/crypto/xts\n got %x\nwant %x", sector, got, want)
	}
	c.DecryptSector(got, want, sector)
	if !bytes.Equal(got, pt) {
		t.Fatalf("sector %#x: decryption does not restore the plaintext", sector)
	}

	buf := bytes.Clone(pt)
	c.EncryptSector(buf, buf, sector)
	if !bytes.Equal(buf, want) {
		t.Fatalf("sector %#x: in-place encryption differs", sector)
	}
	c.DecryptSector(buf, buf, sector)
	if !bytes.Equal(buf, pt) {
		t.Fatalf("sector %#x: in-place decryption does not restore the plaintext", sector)
	}
}

// TestSectors checks the multi-sector API, including buffers large enough
// to be split between goroutines and numbering that wraps past 2^64-1.
func TestSectors(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		sectorSize, sectors int
		first               uint64
	}{
		{512, 1, 7},
		{512, 3, ^uint64(0) - 1}, // wraps to 0
		{4096, 5, 1 << 40},
		{512, 4 * parallelMin / 512, 12345},   // parallel
		{4096, parallelMin/4096 + 3, 1 << 63}, // parallel, short last chunk
		{144, 2000, 99},
	}
	for _, im := range impls(t) {
		for _, keyLen := range []int{32, 64} {
			for _, tc := range cases {
				name := fmt.Sprintf("%s/key%d/%dx%d", im.name, keyLen, tc.sectors, tc.sectorSize)
				t.Run(name, func(t *testing.T) {
					key := randBytes(rng, keyLen)
					c := mustCipher(t, key, im)
					ref := reference(t, key)
					pt := randBytes(rng, tc.sectorSize*tc.sectors)

					want := make([]byte, len(pt))
					for i := range tc.sectors {
						off := i * tc.sectorSize
						ref.Encrypt(want[off:off+tc.sectorSize], pt[off:off+tc.sectorSize], tc.first+uint64(i))
					}

					got := make([]byte, len(pt))
					c.EncryptSectors(got, pt, tc.sectorSize, tc.first)
					if !bytes.Equal(got, want) {
						t.Fatalf("EncryptSectors differs from per-sector x/crypto/xts at byte %d", firstDiff(got, want))
					}
					c.DecryptSectors(got, got, tc.sectorSize, tc.first)
					if !bytes.Equal(got, pt) {
						t.Fatalf("in-place DecryptSectors does not restore the plaintext at byte %d", firstDiff(got, pt))
					}
				})
			}
		}
	}
}

func TestNewKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 48, 63, 65, 128} {
		c, err := New(make([]byte, n))
		if !errors.Is(err, ErrKeySize) || c != nil {
			t.Errorf("New(%d-byte key) = %v, %v; want nil, ErrKeySize", n, c, err)
		}
	}
}

// TestNewCopiesKey makes sure the caller can wipe its key right after New.
func TestNewCopiesKey(t *testing.T) {
	for _, im := range impls(t) {
		key := bytes.Repeat([]byte{0x5a}, 64)
		c := mustCipher(t, key, im)
		ref := reference(t, bytes.Clone(key))
		clear(key)
		compareSector(t, c, ref, make([]byte, 512), 1)
	}
}

func TestMisusePanics(t *testing.T) {
	c := mustCipher(t, make([]byte, 32), impl{asm: haveAsm, vaes: haveVAES})
	buf := make([]byte, 8192)
	cases := map[string]func(){
		"empty sector":          func() { c.EncryptSector(buf[:0], buf[:0], 0) },
		"partial block":         func() { c.EncryptSector(buf[:520], buf[4096:4096+520], 0) },
		"short dst":             func() { c.DecryptSector(buf[:496], buf[4096:4096+512], 0) },
		"shifted overlap":       func() { c.EncryptSector(buf[16:528], buf[:512], 0) },
		"zero sector size":      func() { c.EncryptSectors(buf[:512], buf[4096:4608], 0, 0) },
		"odd sector size":       func() { c.EncryptSectors(buf[:1000], buf[4096:5096], 1000, 0) },
		"not whole sectors":     func() { c.DecryptSectors(buf[:1024], buf[4096:5120], 4096, 0) },
		"sectors short dst":     func() { c.EncryptSectors(buf[:512], buf[4096:5120], 512, 0) },
		"sectors shifted alias": func() { c.EncryptSectors(buf[512:1536], buf[:1024], 512, 0) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		})
	}
}

func TestWipe(t *testing.T) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			c := mustCipher(t, bytes.Repeat([]byte{0xa5}, 64), im)
			c.Wipe()
			var zero [scheduleLen]byte
			if c.enc1 != zero || c.dec1 != zero || c.enc2 != zero || c.b1 != nil || c.b2 != nil {
				t.Fatal("Wipe left key material in the Cipher")
			}
			defer func() {
				if recover() == nil {
					t.Fatal("EncryptSector after Wipe did not panic")
				}
			}()
			buf := make([]byte, 512)
			c.EncryptSector(buf, buf, 0)
		})
	}
}

func TestMulAlpha(t *testing.T) {
	// The top bit folds back as 0x87, bit 63 carries into bit 64.
	cases := []struct{ lo, hi, wantLo, wantHi uint64 }{
		{1, 0, 2, 0},
		{1 << 63, 0, 0, 1},
		{0, 1 << 63, 0x87, 0},
		{1 << 63, 1 << 63, 0x87, 1},
		{^uint64(0), ^uint64(0), 0xfffffffffffffffe ^ 0x87, ^uint64(0)},
	}
	for _, tc := range cases {
		lo, hi := mulAlpha(tc.lo, tc.hi)
		if lo != tc.wantLo || hi != tc.wantHi {
			t.Errorf("mulAlpha(%#x, %#x) = %#x, %#x; want %#x, %#x", tc.lo, tc.hi, lo, hi, tc.wantLo, tc.wantHi)
		}
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
