package contentenc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"kmsagent/fuse/aesgcm"
)

func TestBlockRoundTrip(t *testing.T) {
	c := newCE(t, katMaster())
	id := testFileID()
	for _, n := range []int{1, 15, 16, 17, 4095, 4096} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := randBytes(n)
			prefix := []byte("prefix")
			ct := c.EncryptBlock(bytes.Clone(prefix), plain, 7, id)
			if !bytes.HasPrefix(ct, prefix) || len(ct) != len(prefix)+n+Overhead {
				t.Fatalf("EncryptBlock: %d bytes, want prefix + %d", len(ct), n+Overhead)
			}
			ct = ct[len(prefix):]
			got, err := c.DecryptBlock(bytes.Clone(prefix), ct, 7, id)
			if err != nil || !bytes.Equal(got, append(bytes.Clone(prefix), plain...)) {
				t.Fatalf("DecryptBlock: %v", err)
			}
			if again := c.EncryptBlock(nil, plain, 7, id); bytes.Equal(again[:IVLen], ct[:IVLen]) {
				t.Fatal("nonce repeated")
			}
		})
	}
	if got := c.EncryptBlock(nil, nil, 0, id); len(got) != 0 {
		t.Fatalf("empty block encrypts to %d bytes", len(got))
	}
	if got, err := c.DecryptBlock(nil, nil, 0, id); err != nil || len(got) != 0 {
		t.Fatalf("empty block decrypts to %d bytes, %v", len(got), err)
	}
}

func TestDecryptBlockRejects(t *testing.T) {
	c := newCE(t, katMaster())
	id := testFileID()
	plain := randBytes(100)
	ct := c.EncryptBlock(nil, plain, 3, id)
	flip := func(i int) []byte { b := bytes.Clone(ct); b[i] ^= 0x80; return b }
	full := c.EncryptBlock(nil, randBytes(DefaultBS), 3, id)
	for _, tc := range []struct {
		name    string
		ct      []byte
		blockNo uint64
		fileID  []byte
		want    error
	}{
		{"wrong block number", ct, 4, id, ErrAuth},
		{"wrong file ID", ct, 3, []byte("fedcba9876543210"), ErrAuth},
		{"no file ID", ct, 3, nil, ErrAuth},
		{"flipped nonce", flip(0), 3, id, ErrAuth},
		{"flipped data", flip(IVLen + 5), 3, id, ErrAuth},
		{"flipped tag", flip(len(ct) - 1), 3, id, ErrAuth},
		{"truncated", ct[:len(ct)-1], 3, id, ErrAuth},
		{"extended", append(bytes.Clone(full), 0), 3, id, ErrBlock},
		{"nonce and tag only", ct[:Overhead], 3, id, ErrBlock},
		{"one byte", ct[:1], 3, id, ErrBlock},
		{"zero nonce", append(make([]byte, IVLen), ct[IVLen:]...), 3, id, ErrBlock},
		{"short zero block", make([]byte, 100), 3, id, ErrBlock},
		{"bad file ID length", ct, 3, []byte("short"), ErrBlock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.DecryptBlock([]byte("keep"), tc.ct, tc.blockNo, tc.fileID)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var be *BlockError
			if !errors.As(err, &be) || be.BlockNo != tc.blockNo {
				t.Fatalf("err = %#v, want *BlockError for block %d", err, tc.blockNo)
			}
			if string(out) != "keep" {
				t.Fatalf("dst changed on error: %q", out)
			}
		})
	}
}

func TestHole(t *testing.T) {
	c := newCE(t, katMaster())
	got, err := c.DecryptBlock([]byte("x"), make([]byte, CipherBS), 9, testFileID())
	if err != nil || !bytes.Equal(got, append([]byte("x"), make([]byte, DefaultBS)...)) {
		t.Fatalf("hole: %d bytes, %v", len(got), err)
	}
}

func TestEncryptBlockPanics(t *testing.T) {
	c := newCE(t, katMaster())
	for name, f := range map[string]func(){
		"oversized block": func() { c.EncryptBlock(nil, make([]byte, DefaultBS+1), 0, nil) },
		"bad file ID":     func() { c.EncryptBlock(nil, []byte{1}, 0, []byte{1, 2}) },
		"bad file ID (blocks)": func() {
			c.EncryptBlocks(nil, []byte{1}, 0, []byte{1, 2})
		},
	} {
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

// Sizes around block boundaries and above the parallel threshold.
var multiSizes = []int{1, 4095, 4096, 4097, 2*4096 + 1, parallelMin*DefaultBS - 1, parallelMin * DefaultBS,
	(2*parallelMin+3)*DefaultBS + 100, 3 << 20}

func TestBlocksRoundTrip(t *testing.T) {
	c := newCE(t, katMaster())
	id := testFileID()
	const first = 5
	for _, n := range multiSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := randBytes(n)
			ct := c.EncryptBlocks([]byte("hdr"), plain, first, id)
			ct = ct[3:]
			if want := CipherSize(uint64(n)) - HeaderLen; uint64(len(ct)) != want {
				t.Fatalf("EncryptBlocks: %d bytes, want %d", len(ct), want)
			}
			// Each block must be what EncryptBlock would have produced:
			// decrypt them one by one at their own block numbers.
			var one []byte
			for i := 0; i*CipherBS < len(ct); i++ {
				var err error
				one, err = c.DecryptBlock(one, ct[i*CipherBS:min((i+1)*CipherBS, len(ct))], first+uint64(i), id)
				if err != nil {
					t.Fatalf("block %d: %v", i, err)
				}
			}
			all, err := c.DecryptBlocks(bytes.Clone(ct), first, id)
			if err != nil || !bytes.Equal(all, plain) || !bytes.Equal(one, plain) {
				t.Fatalf("DecryptBlocks: %v", err)
			}
		})
	}
	if got := c.EncryptBlocks([]byte("x"), nil, 0, id); string(got) != "x" {
		t.Fatalf("EncryptBlocks(empty) = %q", got)
	}
	if got, err := c.DecryptBlocks(nil, 0, id); err != nil || len(got) != 0 {
		t.Fatalf("DecryptBlocks(empty) = %q, %v", got, err)
	}
}

func TestDecryptBlocksHoles(t *testing.T) {
	c := newCE(t, katMaster())
	id := testFileID()
	b0 := c.EncryptBlock(nil, bytes.Repeat([]byte{'a'}, DefaultBS), 0, id)
	b2 := c.EncryptBlock(nil, []byte("tail"), 2, id)
	ct := append(append(b0, make([]byte, CipherBS)...), b2...)
	got, err := c.DecryptBlocks(ct, 0, id)
	want := append(append(bytes.Repeat([]byte{'a'}, DefaultBS), make([]byte, DefaultBS)...), "tail"...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("DecryptBlocks with hole: %d bytes, %v", len(got), err)
	}
}

// bothAEADs returns a ContentEnc on fuse/aesgcm (where this CPU runs it)
// and one on crypto/cipher, with the same random key: DecryptBlocks takes
// a different path for each.
func bothAEADs(t *testing.T) map[string]*ContentEnc {
	key := randBytes(32)
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	std, err := cipher.NewGCMWithNonceSize(blk, IVLen)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*ContentEnc{"crypto-cipher": New(std)}
	if aesgcm.Supported() {
		fast, err := aesgcm.New(key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fast.Wipe)
		m["aesgcm"] = New(fast)
	}
	return m
}

func TestDecryptBlocksBothAEADs(t *testing.T) {
	id := testFileID()
	for name, c := range bothAEADs(t) {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{1, DefaultBS - 1, DefaultBS, DefaultBS + 1, 3*DefaultBS + 100, 256 * DefaultBS} {
				plain := randBytes(size)
				ct := c.EncryptBlocks(nil, plain, 7, id)
				if size > 2*DefaultBS {
					// A hole in block 1.
					clear(ct[CipherBS : 2*CipherBS])
					clear(plain[DefaultBS : 2*DefaultBS])
				}
				got, err := c.DecryptBlocks(ct, 7, id)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("%d bytes: %v", size, err)
				}
				if &got[0] != &ct[0] {
					t.Fatal("plaintext not at the front of the buffer")
				}
			}
			if got, err := c.DecryptBlocks(nil, 0, id); err != nil || len(got) != 0 {
				t.Fatalf("empty: %q, %v", got, err)
			}
			// A bad block: the blocks before it come back, with its number.
			plain := randBytes(10 * DefaultBS)
			ct := c.EncryptBlocks(nil, plain, 0, id)
			ct[6*CipherBS+IVLen] ^= 1
			got, err := c.DecryptBlocks(ct, 0, id)
			var be *BlockError
			if !errors.As(err, &be) || be.BlockNo != 6 || !errors.Is(err, ErrAuth) {
				t.Fatalf("tampered block 6: %v", err)
			}
			if !bytes.Equal(got, plain[:6*DefaultBS]) {
				t.Fatalf("returned %d bytes, want the 6 good blocks", len(got))
			}
			if _, err := c.DecryptBlocks(append(ct[:CipherBS:CipherBS], 1, 2, 3), 0, id); !errors.Is(err, ErrBlock) {
				t.Fatalf("short last block: %v", err)
			}
		})
	}
}

func TestDecryptBlocksReportsFirstBadBlock(t *testing.T) {
	c := newCE(t, katMaster())
	id := testFileID()
	const n = 128
	plain := randBytes(n * DefaultBS)
	ct := c.EncryptBlocks(nil, plain, 100, id)
	for _, tc := range []struct {
		name    string
		corrupt []int
		want    int
	}{
		{"first", []int{0}, 0},
		{"middle", []int{77}, 77},
		{"last", []int{n - 1}, n - 1},
		{"two, lower wins", []int{n - 2, 40}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(ct)
			for _, i := range tc.corrupt {
				bad[i*CipherBS+IVLen] ^= 1
			}
			got, err := c.DecryptBlocks(bad, 100, id)
			var be *BlockError
			if !errors.As(err, &be) || !errors.Is(err, ErrAuth) || be.BlockNo != uint64(100+tc.want) {
				t.Fatalf("err = %v, want block %d", err, 100+tc.want)
			}
			if !bytes.Equal(got, plain[:tc.want*DefaultBS]) {
				t.Fatalf("returned %d bytes, want the %d good blocks before the bad one", len(got), tc.want)
			}
		})
	}
	// A last block too short to hold data.
	if _, err := c.DecryptBlocks(append(bytes.Clone(ct[:CipherBS]), 1, 2, 3), 0, id); !errors.Is(err, ErrBlock) {
		t.Fatalf("short last block: %v", err)
	}
}

func TestXattrValue(t *testing.T) {
	c := newCE(t, katMaster())
	for _, n := range []int{0, 1, 4096, 5000, 64 << 10} {
		plain := randBytes(n)
		stored := c.EncryptXattrValue(plain)
		if n == 0 && len(stored) != 0 || n > 0 && len(stored) != n+Overhead {
			t.Fatalf("%d bytes: stored %d", n, len(stored))
		}
		got, err := c.DecryptXattrValue(stored)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: DecryptXattrValue: %v", n, err)
		}
	}
	// Early gocryptfs versions stored values base64-encoded.
	legacy := []byte(base64.RawURLEncoding.EncodeToString(c.EncryptXattrValue([]byte("old"))))
	if got, err := c.DecryptXattrValue(legacy); err != nil || string(got) != "old" {
		t.Fatalf("legacy value: %q, %v", got, err)
	}
	for _, bad := range [][]byte{[]byte("garbage"), randBytes(100), bytes.Repeat([]byte{'A'}, 200)} {
		if _, err := c.DecryptXattrValue(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("DecryptXattrValue(%q): %v, want ErrValue", bad, err)
		}
	}
}

func TestSymlinkTarget(t *testing.T) {
	c := newCE(t, katMaster())
	for _, target := range []string{"", "a", "../x/y", string(bytes.Repeat([]byte{'p'}, 4095))} {
		s := c.EncryptSymlinkTarget(target)
		got, err := c.DecryptSymlinkTarget(s)
		if err != nil || got != target {
			t.Fatalf("%q: %q, %v", target, got, err)
		}
	}
	for _, bad := range []string{"!!", "AAAA", c.EncryptSymlinkTarget("x") + "A"} {
		if _, err := c.DecryptSymlinkTarget(bad); !errors.Is(err, ErrValue) {
			t.Fatalf("DecryptSymlinkTarget(%q): %v", bad, err)
		}
	}
}

func TestNewRejectsWrongAEAD(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted a 12-byte-nonce GCM")
		}
	}()
	New(stdGCM(t))
}

func FuzzDecryptBlock(f *testing.F) {
	c := newCE(f, katMaster())
	id := testFileID()
	f.Add(c.EncryptBlock(nil, []byte("seed"), 0, id), uint64(0), true)
	f.Add(c.EncryptBlock(nil, randBytes(DefaultBS), 1, nil), uint64(1), false)
	f.Add(make([]byte, CipherBS), uint64(2), true)
	f.Add([]byte{}, uint64(0), false)
	f.Fuzz(func(t *testing.T, ct []byte, blockNo uint64, withID bool) {
		fid := []byte(nil)
		if withID {
			fid = id
		}
		plain, err := c.DecryptBlock(nil, ct, blockNo, fid)
		if err != nil {
			var be *BlockError
			if !errors.As(err, &be) || be.BlockNo != blockNo || !(errors.Is(err, ErrAuth) || errors.Is(err, ErrBlock)) {
				t.Fatalf("unexpected error shape: %v", err)
			}
			return
		}
		// Forging a tag is out of reach for a fuzzer, so success means
		// an input built from a seed, a hole or nothing.
		if len(ct) > 0 && len(plain) != len(ct)-Overhead {
			t.Fatalf("%d cipher bytes gave %d plain bytes", len(ct), len(plain))
		}
		// Whatever decrypts must survive a round trip.
		if len(plain) > 0 {
			back, err := c.DecryptBlock(nil, c.EncryptBlock(nil, plain, blockNo, fid), blockNo, fid)
			if err != nil || !bytes.Equal(back, plain) {
				t.Fatalf("round trip: %v", err)
			}
		}
		if mult, err := c.DecryptBlocks(bytes.Clone(ct), blockNo, fid); err != nil || !bytes.Equal(mult, plain) {
			t.Fatalf("DecryptBlocks disagrees with DecryptBlock: %v", err)
		}
	})
}

func benchSizes() []int { return []int{DefaultBS, 128 << 10, 1 << 20} }

func BenchmarkEncryptBlocks(b *testing.B) {
	c := newCE(b, katMaster())
	id := testFileID()
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			plain := randBytes(n)
			dst := make([]byte, 0, CipherSize(uint64(n)))
			b.SetBytes(int64(n))
			for b.Loop() {
				dst = c.EncryptBlocks(dst[:0], plain, 0, id)
			}
		})
	}
}

func BenchmarkDecryptBlocks(b *testing.B) {
	c := newCE(b, katMaster())
	id := testFileID()
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			ct := c.EncryptBlocks(nil, randBytes(n), 0, id)
			// DecryptBlocks works in place: each round decrypts a fresh
			// copy, and the copy is part of the time.
			buf := make([]byte, len(ct))
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(buf, ct)
				if _, err := c.DecryptBlocks(buf, 0, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
