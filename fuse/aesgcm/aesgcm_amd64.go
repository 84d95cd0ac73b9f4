//go:build amd64 && !purego

package aesgcm

import "golang.org/x/sys/cpu"

// haveAsm reports whether this CPU and kernel can run the assembly: VAES
// and VPCLMULQDQ on 512-bit registers (AVX-512 F, BW and VL, which x/sys
// reports only where the kernel saves the registers).
var haveAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ

// expandKey writes the 15 round keys of the AES-256 key to rk.
//
//go:noescape
func expandKey(key *[KeySize]byte, rk *[roundKeysLen]byte)

// initKey stores the GHASH key powers (see aesgcm_amd64.s) in htab.
//
//go:noescape
func initKey(rk *[roundKeysLen]byte, htab *[hashTableLen]byte)

// ghashBlocks adds the n 16-byte blocks at src to the GHASH state y.
//
//go:noescape
func ghashBlocks(htab *[hashTableLen]byte, y *[16]byte, src *byte, n int)

// ctrBlocks XORs the n 16-byte blocks at src with the key stream from
// counter block ctr on and stores them at dst, which may equal src.
//
//go:noescape
func ctrBlocks(rk *[roundKeysLen]byte, ctr *[16]byte, dst, src *byte, n int)
