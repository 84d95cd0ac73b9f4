package xts

import (
	"crypto/aes"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/xts"
)

// impl names one implementation for table tests.
type impl struct {
	name      string
	asm, vaes bool
}

// impls lists the implementations this machine can run: always the
// generic one, the AES-NI assembly where the CPU has AES-NI, and the VAES
// assembly (for sectors that are a multiple of 256 bytes, AES-NI for the
// rest) where it has AVX-512 with VAES.
func impls(t testing.TB) []impl {
	t.Helper()
	list := []impl{{name: "generic"}}
	if haveAsm {
		list = append(list, impl{name: "asm", asm: true})
	} else {
		t.Log("no AES-NI assembly on this machine; testing the generic path only")
	}
	if haveVAES {
		list = append(list, impl{name: "vaes", asm: true, vaes: true})
	} else {
		t.Log("no VAES on this machine; its assembly is not tested")
	}
	return list
}

func mustCipher(t testing.TB, key []byte, im impl) *Cipher {
	t.Helper()
	c, err := newCipher(key, im.asm)
	if err != nil {
		t.Fatalf("newCipher(%d-byte key): %v", len(key), err)
	}
	c.vaes = im.vaes
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
