package secret

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestHKDFMatchesStdlib: same bytes as crypto/hkdf for every input length
// the extract step takes.
func TestHKDFMatchesStdlib(t *testing.T) {
	for n := 1; n <= 55; n++ {
		ikm := make([]byte, n)
		rand.Read(ikm)
		for _, info := range []string{"", "AES-GCM file content encryption", "EME filename encryption"} {
			want, err := hkdf.Key(sha256.New, ikm, nil, info, 32)
			if err != nil {
				t.Fatal(err)
			}
			k, _ := FromBytes(append([]byte(nil), ikm...))
			got, err := HKDF(k, info, 32)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("ikm %d bytes, info %q: differs from crypto/hkdf", n, info)
			}
			got.Wipe()
			k.Wipe()
		}
	}
}

// TestHKDFRFC5869Case3 is RFC 5869's test case 3 (empty salt and info).
func TestHKDFRFC5869Case3(t *testing.T) {
	ikm, _ := FromBytes(bytes.Repeat([]byte{0x0b}, 22))
	defer ikm.Wipe()
	okm, err := HKDF(ikm, "", 42)
	if err != nil {
		t.Fatal(err)
	}
	const want = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
	if got := hex.EncodeToString(okm.Bytes()); got != want {
		t.Fatalf("got %s", got)
	}
}

func TestHKDFRejects(t *testing.T) {
	for _, n := range []int{0, 56} {
		k, _ := New(n)
		if _, err := HKDF(k, "x", 32); err == nil {
			t.Errorf("%d-byte input accepted", n)
		}
	}
}
