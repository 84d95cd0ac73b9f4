package aesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"testing"
)

// TestMain runs the tests only where the assembly runs. Elsewhere it
// checks that New refuses (so that cryptocore falls back to crypto/cipher)
// and stops: there is nothing else here to test. On a CPU that has the
// instructions a refusal is a broken detection and fails.
func TestMain(m *testing.M) {
	if !Supported() {
		if asmBuilt && haveAsmExpected() && !fips140.Enabled() {
			fmt.Fprintln(os.Stderr, "aesgcm: /proc/cpuinfo lists VAES, VPCLMULQDQ and AVX-512 but Supported is false")
			os.Exit(1)
		}
		if _, err := New(make([]byte, KeySize)); !errors.Is(err, ErrUnsupported) {
			fmt.Fprintf(os.Stderr, "aesgcm: New without the assembly: %v, want ErrUnsupported\n", err)
			os.Exit(1)
		}
		fmt.Println("aesgcm: no VAES/VPCLMULQDQ/AVX-512 here (or FIPS mode); New refuses as it should")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// newPair returns this package's AEAD and crypto/cipher's for one key.
func newPair(t testing.TB, key []byte) (*AEAD, cipher.AEAD) {
	t.Helper()
	g, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Wipe)
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := cipher.NewGCMWithNonceSize(b, NonceSize)
	if err != nil {
		t.Fatal(err)
	}
	return g, ref
}

// haveAsmExpected reads /proc/cpuinfo, independently of x/sys/cpu, to
// tell a machine with the instructions (where a refusal would be a broken
// detection) from one without.
func haveAsmExpected() bool {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, f := range []string{" vaes", " vpclmulqdq", " avx512f", " avx512bw", " avx512vl"} {
		if !bytes.Contains(info, []byte(f)) {
			return false
		}
	}
	return true
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestKnownAnswer is NIST's GCM test case 16 (AES-256, 60-byte plaintext,
// 20-byte additional data) re-keyed to a 16-byte nonce and checked against
// the result of Python's cryptography package (OpenSSL), computed
// independently of Go.
func TestKnownAnswer(t *testing.T) {
	key, _ := hex.DecodeString("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
	g, ref := newPair(t, key)
	nonce, _ := hex.DecodeString("cafebabefacedbaddecaf888feedface")
	plain, _ := hex.DecodeString("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
	ad, _ := hex.DecodeString("feedfacedeadbeeffeedfacedeadbeefabaddad2")
	want, _ := hex.DecodeString("3dabe8c2c442b078986cd191bd84ec31ee311189a8ad97ab7964cb95f3b90dc13164021ff694951f66f88dbfc72d41e3469c881a08e02d29b37cfeb37f69084b3da90040aba0ba1012f8efaf")
	for name, a := range map[string]cipher.AEAD{"aesgcm": g, "crypto/cipher": ref} {
		if got := a.Seal(nil, nonce, plain, ad); !bytes.Equal(got, want) {
			t.Fatalf("%s Seal:\n got %x\nwant %x", name, got, want)
		}
	}
}

// TestAgainstStdlib seals and opens every length from 0 to 600 bytes and
// the format's block sizes, with additional data of several lengths,
// and compares each result with crypto/cipher's.
func TestAgainstStdlib(t *testing.T) {
	g, ref := newPair(t, randBytes(KeySize))
	lengths := []int{4095, 4096, 4097, 8192, 65536 + 48}
	for n := 0; n <= 600; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		for _, adLen := range []int{0, 1, 15, 16, 24, 33} {
			nonce, plain, ad := randBytes(NonceSize), randBytes(n), randBytes(adLen)
			want := ref.Seal(nil, nonce, plain, ad)
			got := g.Seal(nil, nonce, plain, ad)
			if !bytes.Equal(got, want) {
				t.Fatalf("Seal(len %d, ad %d) differs from crypto/cipher", n, adLen)
			}
			back, err := g.Open(nil, nonce, want, ad)
			if err != nil || !bytes.Equal(back, plain) {
				t.Fatalf("Open(len %d, ad %d): %v", n, adLen, err)
			}
		}
	}
}

// TestCounterWrap runs counter mode from first counter blocks whose last
// four bytes are just below the wrap, so that inc32 wraps inside the
// sixteen-block loop, the single-block tail and the partial last block,
// and compares the output with crypto/aes applied block by block.
func TestCounterWrap(t *testing.T) {
	key := randBytes(KeySize)
	g, _ := newPair(t, key)
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []uint32{0xffffffff, 0xfffffffe, 0xfffffff0, 0xffffffe3, 0xffffff00, 0} {
		for _, n := range []int{1, 15, 16, 17, 255, 256, 257, 4096, 4096 + 5, 300 * 16} {
			var j0 [16]byte
			copy(j0[:12], randBytes(12))
			binary.BigEndian.PutUint32(j0[12:], start)
			src := randBytes(n)
			got := make([]byte, n)
			g.counterMode(&j0, got, src)
			want := make([]byte, n)
			ctr := j0
			for i := 0; i < n; i += 16 {
				inc32(&ctr, 1)
				var ks [16]byte
				b.Encrypt(ks[:], ctr[:])
				for j := i; j < min(i+16, n); j++ {
					want[j] = src[j] ^ ks[j-i]
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("counter %08x, %d bytes: key stream differs from crypto/aes", start, n)
			}
		}
	}
}

// TestTamper flips every bit of a sealed message in turn (nonce, data
// and tag) and checks that Open refuses each and writes nothing.
func TestTamper(t *testing.T) {
	g, _ := newPair(t, randBytes(KeySize))
	nonce, plain, ad := randBytes(NonceSize), randBytes(100), randBytes(24)
	sealed := g.Seal(nil, nonce, plain, ad)
	dst := bytes.Repeat([]byte{0xa5}, 200)
	for i := range 8 * len(sealed) {
		bad := bytes.Clone(sealed)
		bad[i/8] ^= 1 << (i % 8)
		out, err := g.Open(dst[:0], nonce, bad, ad)
		if err == nil || out != nil {
			t.Fatalf("bit %d flipped: Open accepted it", i)
		}
	}
	for i := range 8 * NonceSize {
		n := bytes.Clone(nonce)
		n[i/8] ^= 1 << (i % 8)
		if _, err := g.Open(nil, n, sealed, ad); err == nil {
			t.Fatalf("nonce bit %d flipped: Open accepted it", i)
		}
	}
	if _, err := g.Open(nil, nonce, sealed, ad[:23]); err == nil {
		t.Fatal("shorter additional data accepted")
	}
	if _, err := g.Open(nil, nonce, sealed[:TagSize-1], ad); err == nil {
		t.Fatal("message shorter than a tag accepted")
	}
	if !bytes.Equal(dst, bytes.Repeat([]byte{0xa5}, 200)) {
		t.Fatal("a refused Open wrote to dst")
	}
}

// TestInPlace seals and opens with the output on top of the input, as
// cipher.AEAD allows, and appends after existing bytes of dst.
func TestInPlace(t *testing.T) {
	g, ref := newPair(t, randBytes(KeySize))
	nonce, plain := randBytes(NonceSize), randBytes(4096)
	want := ref.Seal(nil, nonce, plain, nil)
	buf := make([]byte, len(plain), len(plain)+TagSize)
	copy(buf, plain)
	got := g.Seal(buf[:0], nonce, buf, nil)
	if !bytes.Equal(got, want) {
		t.Fatal("in-place Seal differs")
	}
	back, err := g.Open(got[:0], nonce, got, nil)
	if err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("in-place Open: %v", err)
	}
	prefix := []byte("prefix")
	out := g.Seal(bytes.Clone(prefix), nonce, plain, nil)
	if !bytes.Equal(out[:len(prefix)], prefix) || !bytes.Equal(out[len(prefix):], want) {
		t.Fatal("Seal did not append")
	}
}

// TestOpenDownward opens each of a run of sealed messages into the front
// of the buffer holding them, the plaintext of each landing below its own
// ciphertext, as fuse/contentenc's in-place decryption does.
func TestOpenDownward(t *testing.T) {
	g, ref := newPair(t, randBytes(KeySize))
	for _, size := range []int{1, 15, 16, 17, 255, 256, 257, 4096} {
		const count = 5
		nonce := randBytes(NonceSize)
		var plains [][]byte
		var buf []byte
		for range count {
			p := randBytes(size)
			plains = append(plains, p)
			buf = ref.Seal(buf, nonce, p, nil)
		}
		stride := size + TagSize
		for i := range count {
			out, err := g.Open(buf[i*size:i*size], nonce, buf[i*stride:(i+1)*stride], nil)
			if err != nil {
				t.Fatalf("size %d, message %d: %v", size, i, err)
			}
			if !bytes.Equal(out, plains[i]) {
				t.Fatalf("size %d, message %d: wrong plaintext", size, i)
			}
		}
		if !bytes.Equal(buf[:count*size], bytes.Join(plains, nil)) {
			t.Fatalf("size %d: a later message's plaintext overwrote an earlier one", size)
		}
	}
}

func TestOverlapPanics(t *testing.T) {
	g, _ := newPair(t, randBytes(KeySize))
	buf := make([]byte, 200)
	defer func() {
		if recover() == nil {
			t.Fatal("inexact overlap did not panic")
		}
	}()
	g.Seal(buf[1:1], randBytes(NonceSize), buf[:100], nil)
}

func TestOpenUpwardPanics(t *testing.T) {
	g, ref := newPair(t, randBytes(KeySize))
	nonce := randBytes(NonceSize)
	buf := ref.Seal(make([]byte, 0, 300), nonce, randBytes(100), nil)
	defer func() {
		if recover() == nil {
			t.Fatal("plaintext above its ciphertext did not panic")
		}
	}()
	g.Open(buf[1:1], nonce, buf, nil)
}

// TestConcurrent seals from several goroutines at once: the AEAD keeps
// no per-call state outside the stack.
func TestConcurrent(t *testing.T) {
	g, ref := newPair(t, randBytes(KeySize))
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 200 {
				nonce, plain := randBytes(NonceSize), randBytes(mrand.IntN(5000))
				if !bytes.Equal(g.Seal(nil, nonce, plain, nil), ref.Seal(nil, nonce, plain, nil)) {
					errs <- fmt.Errorf("concurrent Seal differs")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestWipe(t *testing.T) {
	g, _ := newPair(t, randBytes(KeySize))
	g.Wipe()
	g.Wipe()
	defer func() {
		if recover() == nil {
			t.Fatal("Seal after Wipe did not panic")
		}
	}()
	g.Seal(nil, randBytes(NonceSize), []byte("x"), nil)
}

func TestBadKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
}

// FuzzOpen feeds arbitrary bytes to Open (the path that reads untrusted
// disk contents) and checks it agrees with crypto/cipher on whether they
// authenticate and on the plaintext.
func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{7}, KeySize)
	g, ref := newPair(f, key)
	nonce := bytes.Repeat([]byte{9}, NonceSize)
	f.Add(ref.Seal(nil, nonce, []byte("hello, world"), []byte("ad")), []byte("ad"))
	f.Add(make([]byte, 40), []byte{})
	f.Add(ref.Seal(nil, nonce, bytes.Repeat([]byte{1}, 4096), nil), []byte{})
	f.Fuzz(func(t *testing.T, msg, ad []byte) {
		got, err := g.Open(nil, nonce, msg, ad)
		want, werr := ref.Open(nil, nonce, msg, ad)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("Open disagrees with crypto/cipher: %v against %v", err, werr)
		}
		// And sealing the fuzzed bytes must match too.
		if !bytes.Equal(g.Seal(nil, nonce, msg, ad), ref.Seal(nil, nonce, msg, ad)) {
			t.Fatal("Seal disagrees with crypto/cipher")
		}
	})
}

// BenchmarkAEAD seals and opens 4 KiB (the format's block) and 64 KiB
// with this package and with crypto/cipher.
func BenchmarkAEAD(b *testing.B) {
	for _, op := range []string{"Seal", "Open"} {
		for _, impl := range []string{"aesgcm", "crypto-cipher"} {
			for _, n := range []int{4096, 64 << 10} {
				b.Run(fmt.Sprintf("%s/%s/%dKiB", op, impl, n>>10), func(b *testing.B) {
					g, ref := newPair(b, randBytes(KeySize))
					var a cipher.AEAD = g
					if impl != "aesgcm" {
						a = ref
					}
					nonce, plain, ad := randBytes(NonceSize), randBytes(n), randBytes(24)
					sealed := ref.Seal(nil, nonce, plain, ad)
					dst := make([]byte, 0, len(sealed))
					b.SetBytes(int64(n))
					for b.Loop() {
						if op == "Seal" {
							dst = a.Seal(dst[:0], nonce, plain, ad)
						} else if _, err := a.Open(dst[:0], nonce, sealed, ad); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
