package contentenc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/fuse/cryptocore"
)

// katMaster is the master key 01 02 … 20 of the known answers in
// kat_test.go.
func katMaster() []byte {
	b := make([]byte, cryptocore.KeyLen)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}

func newCE(tb testing.TB, master []byte) *ContentEnc {
	tb.Helper()
	k, err := secret.FromBytes(bytes.Clone(master))
	if err != nil {
		tb.Fatal(err)
	}
	defer k.Wipe()
	cc, err := cryptocore.New(k)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cc.Wipe)
	return New(cc.ContentAEAD())
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func testFileID() []byte {
	return []byte("0123456789abcdef")
}

// stdGCM is AES-GCM with Go's default 12-byte nonce, which is not the
// gocryptfs format.
func stdGCM(tb testing.TB) cipher.AEAD {
	blk, err := aes.NewCipher(make([]byte, 32))
	if err != nil {
		tb.Fatal(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}
