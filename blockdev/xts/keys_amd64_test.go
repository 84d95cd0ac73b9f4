//go:build amd64 && !purego

package xts

import (
	"bytes"
	"testing"
)

// TestExpandKey checks the key schedule against FIPS 197 Appendix A: the
// last round key of the AES-128 and AES-256 examples.
func TestExpandKey(t *testing.T) {
	if !haveAsm {
		t.Skip("no AES-NI")
	}
	cases := []struct{ key, last string }{
		{"2b7e151628aed2a6abf7158809cf4f3c", "d014f9a8c9ee2589e13f0cc8b6630ca6"},
		{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "fe4890d1e6188d0b046df344706c631e"},
	}
	for _, tc := range cases {
		key := unhex(t, tc.key)
		nr := len(key)/4 + 6
		var enc, dec [scheduleLen]byte
		expandKey(enc[:], key)
		if got := enc[16*nr : 16*nr+16]; !bytes.Equal(got, unhex(t, tc.last)) {
			t.Errorf("AES-%d last round key = %x, want %s", 8*len(key), got, tc.last)
		}
		if !bytes.Equal(enc[:len(key)], key) {
			t.Errorf("AES-%d schedule does not start with the key", 8*len(key))
		}
		// The inverse schedule starts and ends with the outer encryption
		// round keys, which InvMixColumns does not touch.
		invertKey(dec[:], enc[:], nr)
		if !bytes.Equal(dec[:16], enc[16*nr:16*nr+16]) || !bytes.Equal(dec[16*nr:16*nr+16], enc[:16]) {
			t.Errorf("AES-%d inverse schedule has wrong outer round keys", 8*len(key))
		}
	}
}
