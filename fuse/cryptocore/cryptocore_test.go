package cryptocore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"kmsagent/agent/secret"
)

func key(t *testing.T, b []byte) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes(bytes.Clone(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}

func TestNewRejectsBadKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"empty", nil},
		{"short", seq(16)},
		{"long", seq(64)},
		{"all-zero", make([]byte, KeyLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(key(t, tc.key))
			if !errors.Is(err, ErrKey) {
				t.Fatalf("New: err = %v, want ErrKey", err)
			}
		})
	}
}

// hkdfSHA256 is RFC 5869 written out with HMAC, as an independent check
// of the derivation (one output block suffices for 32 bytes).
func hkdfSHA256(ikm []byte, info string) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size)) // empty salt = HashLen zeros
	ext.Write(ikm)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

// TestDerivedKeys checks that the ciphers are keyed with the HKDF outputs
// under gocryptfs's info strings, and pins those outputs for one master key
// so an accidental change of the derivation is caught.
func TestDerivedKeys(t *testing.T) {
	master := seq(KeyLen)
	cc, err := New(key(t, master))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		info  string
		want  string // HKDF-SHA256(master = 01..20, no salt, info), hex
		check func(t *testing.T, k []byte)
	}{
		{
			info: "AES-GCM file content encryption",
			want: "ced798af0f3bf1010de81cd996940c9de0d7df311febb7b0d8f1865a612b53d0",
			check: func(t *testing.T, k []byte) {
				b, _ := aes.NewCipher(k)
				ref, _ := cipher.NewGCMWithNonceSize(b, NonceLen)
				nonce := seq(NonceLen)
				got := cc.ContentAEAD().Seal(nil, nonce, []byte("block"), []byte("ad"))
				if want := ref.Seal(nil, nonce, []byte("block"), []byte("ad")); !bytes.Equal(got, want) {
					t.Errorf("content AEAD not keyed with the HKDF content key")
				}
			},
		},
		{
			info: "EME filename encryption",
			want: "12259edf75e7051def8a79bc08e95ce256616bca9c1229406bd1a8a8eb01183b",
			check: func(t *testing.T, k []byte) {
				ref, _ := aes.NewCipher(k)
				in := seq(16)
				got, want := make([]byte, 16), make([]byte, 16)
				cc.NameBlock().Encrypt(got, in)
				ref.Encrypt(want, in)
				if !bytes.Equal(got, want) {
					t.Errorf("name block not keyed with the HKDF name key")
				}
			},
		},
	} {
		t.Run(tc.info, func(t *testing.T) {
			k, _ := hex.DecodeString(tc.want)
			if ref := hkdfSHA256(master, tc.info); !bytes.Equal(ref, k) {
				t.Fatalf("pinned vector disagrees with RFC 5869: %x", ref)
			}
			tc.check(t, k)
		})
	}
}

func TestParameters(t *testing.T) {
	cc, err := New(key(t, seq(KeyLen)))
	if err != nil {
		t.Fatal(err)
	}
	if n := cc.ContentAEAD().NonceSize(); n != 16 {
		t.Errorf("nonce size %d, want 16 (GCMIV128)", n)
	}
	if n := cc.ContentAEAD().Overhead(); n != 16 {
		t.Errorf("tag size %d, want 16", n)
	}
	if n := cc.NameBlock().BlockSize(); n != 16 {
		t.Errorf("name block size %d, want 16", n)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	cc, err := New(key(t, seq(KeyLen)))
	if err != nil {
		t.Fatal(err)
	}
	// Same master key, same input: content and name ciphers must differ,
	// and neither may be keyed with the master key itself.
	master, _ := aes.NewCipher(seq(KeyLen))
	in := seq(16)
	a, b, m := make([]byte, 16), make([]byte, 16), make([]byte, 16)
	cc.NameBlock().Encrypt(a, in)
	master.Encrypt(m, in)
	ck := hkdfSHA256(seq(KeyLen), infoContent)
	cb, _ := aes.NewCipher(ck)
	cb.Encrypt(b, in)
	if bytes.Equal(a, b) || bytes.Equal(a, m) || bytes.Equal(b, m) {
		t.Fatal("name key, content key and master key are not distinct")
	}
}

func TestMasterKeyUntouched(t *testing.T) {
	k := key(t, seq(KeyLen))
	if _, err := New(k); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Bytes(), seq(KeyLen)) {
		t.Fatal("New modified or wiped the caller's master key")
	}
}

func TestWipe(t *testing.T) {
	cc, err := New(key(t, seq(KeyLen)))
	if err != nil {
		t.Fatal(err)
	}
	cc.Wipe()
	if cc.ContentAEAD() != nil || cc.NameBlock() != nil {
		t.Fatal("ciphers still reachable after Wipe")
	}
	cc.Wipe() // idempotent
	var nilCC *CryptoCore
	nilCC.Wipe()
}
