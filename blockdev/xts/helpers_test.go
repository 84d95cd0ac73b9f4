package xts

import (
	"crypto/aes"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/xts"
)

// impl names one implementation for table tests.
type impl struct {
	name string
	asm  bool
}

// impls lists the implementations this machine can run: always the
// generic one, and the assembly where the CPU has AES-NI.
func impls(t testing.TB) []impl {
	t.Helper()
	list := []impl{{"generic", false}}
	if haveAsm {
		list = append(list, impl{"asm", true})
	} else {
		t.Log("no AES-NI assembly on this machine; testing the generic path only")
	}
	return list
}

func mustCipher(t testing.TB, key []byte, asm bool) *Cipher {
	t.Helper()
	c, err := newCipher(key, asm)
	if err != nil {
		t.Fatalf("newCipher(%d-byte key): %v", len(key), err)
	}
	return c
}

// reference is golang.org/x/crypto/xts with crypto/aes, the implementation
// everything here is compared against.
func reference(t testing.TB, key []byte) *xts.Cipher {
	t.Helper()
	r, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatalf("x/crypto/xts.NewCipher: %v", err)
	}
	return r
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test table: %v", err)
	}
	return b
}
