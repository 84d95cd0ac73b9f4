//go:build amd64 && !purego

package xts

import "golang.org/x/sys/cpu"

// haveAsm reports whether the AES-NI routines can run here. The assembly
// needs only AES-NI and SSE2, which every amd64 CPU has.
var haveAsm = cpu.X86.HasAES

// haveVAES reports whether the sixteen-block VAES routines can run here:
// AVX-512 (F, BW, VL; x/sys checks that the kernel saves the registers)
// with VAES and VPCLMULQDQ.
var haveVAES = haveAsm && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ

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

// encryptSectorVAES is encryptSectorAsm with VAES, for n a non-zero
// multiple of 256 bytes.
//
//go:noescape
func encryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)

// decryptSectorVAES is decryptSectorAsm with VAES, for n a non-zero
// multiple of 256 bytes.
//
//go:noescape
func decryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)

// subWord applies the AES S-box to each byte of w.
func subWord(w uint32) uint32

// invMixColumns stores InvMixColumns(src) in dst.
//
//go:noescape
func invMixColumns(dst, src *[16]byte)
