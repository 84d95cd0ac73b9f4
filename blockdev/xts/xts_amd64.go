//go:build amd64 && !purego

package xts

import "golang.org/x/sys/cpu"

// haveAsm reports whether the AES-NI routines can run here. The assembly
// needs only AES-NI and SSE2, which every amd64 CPU has.
var haveAsm = cpu.X86.HasAES

// encryptSectorAsm encrypts the n bytes (a multiple of 16) at src into dst
// as one XTS data unit. xk holds the nr+1 encryption round keys of the data
// key, tk those of the tweak key; nr is 10 or 14.
//
//go:noescape
func encryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)

// decryptSectorAsm is encryptSectorAsm's inverse; xk holds the round keys
// of the equivalent inverse cipher, tk still the encryption round keys of
// the tweak key (the tweak is always encrypted).
//
//go:noescape
func decryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)

// subWord applies the AES S-box to each byte of w.
func subWord(w uint32) uint32

// invMixColumns stores InvMixColumns(src) in dst.
//
//go:noescape
func invMixColumns(dst, src *[16]byte)
