//go:build amd64 && !purego

#include "textflag.h"

// AES-256-GCM building blocks with VAES and VPCLMULQDQ on 512-bit
// registers: sixteen blocks per iteration, four to a register.
//
// GHASH works on byte-reversed blocks (VPSHUFB with bswapMask), so that a
// block read as a 128-bit little-endian integer has the coefficient of
// x^0 in its top bit. Multiplying two such values with carry-less
// multiplication gives the product shifted by one bit; the hash key is
// stored pre-shifted (H·x, see initKey), which cancels it. The 256-bit
// product is reduced modulo x^128 + x^7 + x^2 + x + 1 in two folds: the
// low 64 bits are multiplied by 0xC2 << 56 (the reflected low terms of
// the polynomial) and added to the value with its halves swapped, twice,
// and the high 128 bits are added last.

DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $16

// poly: the reduction constant, 1 in the low half (the top bit that the
// shift in initKey carries out comes back as x^0) and 0xC2 << 56 in the
// high half.
DATA poly<>+0x00(SB)/8, $0x0000000000000001
DATA poly<>+0x08(SB)/8, $0xC200000000000000
GLOBL poly<>(SB), RODATA|NOPTR, $16

// laneInc: 0, 1, 2 and 3 in the counter word of the four lanes (the low
// dword of a byte-reversed counter block is the block's last four bytes,
// so VPADDD on it is GCM's inc32, wrapping modulo 2^32). laneInc+16 is a
// single 1, the increment of one block.
DATA laneInc<>+0x00(SB)/8, $0
DATA laneInc<>+0x08(SB)/8, $0
DATA laneInc<>+0x10(SB)/8, $1
DATA laneInc<>+0x18(SB)/8, $0
DATA laneInc<>+0x20(SB)/8, $2
DATA laneInc<>+0x28(SB)/8, $0
DATA laneInc<>+0x30(SB)/8, $3
DATA laneInc<>+0x38(SB)/8, $0
GLOBL laneInc<>(SB), RODATA|NOPTR, $64

// inc4: 4 in the counter word of every lane.
DATA inc4<>+0x00(SB)/8, $4
DATA inc4<>+0x08(SB)/8, $0
DATA inc4<>+0x10(SB)/8, $4
DATA inc4<>+0x18(SB)/8, $0
DATA inc4<>+0x20(SB)/8, $4
DATA inc4<>+0x28(SB)/8, $0
DATA inc4<>+0x30(SB)/8, $4
DATA inc4<>+0x38(SB)/8, $0
GLOBL inc4<>(SB), RODATA|NOPTR, $64

// KEY_A and KEY_B are the two steps of the AES-256 key schedule (FIPS
// 197 section 5.2 with Nk = 8): X1 and X3 hold the last two round keys.
// KEY_A makes the next even round key from X1, RotWord(SubWord) of X3's
// last word and rcon; KEY_B the next odd one from X3 and SubWord of X1's
// last word. Each stores the key it made at off(AX). X2 and X4 are
// scratch.
#define KEY_A(rcon, off) \
	VAESKEYGENASSIST $rcon, X3, X2; \
	VPSHUFD          $0xff, X2, X2; \
	VPSLLDQ          $4, X1, X4;    \
	VPXOR            X4, X1, X1;    \
	VPSLLDQ          $4, X4, X4;    \
	VPXOR            X4, X1, X1;    \
	VPSLLDQ          $4, X4, X4;    \
	VPXOR            X4, X1, X1;    \
	VPXOR            X2, X1, X1;    \
	VMOVDQU          X1, off(AX)

#define KEY_B(off) \
	VAESKEYGENASSIST $0, X1, X4; \
	VPSHUFD          $0xaa, X4, X2; \
	VPSLLDQ          $4, X3, X4;    \
	VPXOR            X4, X3, X3;    \
	VPSLLDQ          $4, X4, X4;    \
	VPXOR            X4, X3, X3;    \
	VPSLLDQ          $4, X4, X4;    \
	VPXOR            X4, X3, X3;    \
	VPXOR            X2, X3, X3;    \
	VMOVDQU          X3, off(AX)

// func expandKey(key *[32]byte, rk *[240]byte)
TEXT ·expandKey(SB), NOSPLIT, $0-16
	MOVQ key+0(FP), BX
	MOVQ rk+8(FP), AX
	VMOVDQU 0(BX), X1
	VMOVDQU 16(BX), X3
	VMOVDQU X1, 0(AX)
	VMOVDQU X3, 16(AX)
	KEY_A(0x01, 32)
	KEY_B(48)
	KEY_A(0x02, 64)
	KEY_B(80)
	KEY_A(0x04, 96)
	KEY_B(112)
	KEY_A(0x08, 128)
	KEY_B(144)
	KEY_A(0x10, 160)
	KEY_B(176)
	KEY_A(0x20, 192)
	KEY_B(208)
	KEY_A(0x40, 224)
	VPXOR X1, X1, X1
	VPXOR X2, X2, X2
	VPXOR X3, X3, X3
	VPXOR X4, X4, X4
	VZEROUPPER
	RET

// AES256_X0 encrypts the block in X0 with the 15 round keys at AX.
#define AES256_X0 \
	VPXOR       0(AX), X0, X0;   \
	VAESENC     16(AX), X0, X0;  \
	VAESENC     32(AX), X0, X0;  \
	VAESENC     48(AX), X0, X0;  \
	VAESENC     64(AX), X0, X0;  \
	VAESENC     80(AX), X0, X0;  \
	VAESENC     96(AX), X0, X0;  \
	VAESENC     112(AX), X0, X0; \
	VAESENC     128(AX), X0, X0; \
	VAESENC     144(AX), X0, X0; \
	VAESENC     160(AX), X0, X0; \
	VAESENC     176(AX), X0, X0; \
	VAESENC     192(AX), X0, X0; \
	VAESENC     208(AX), X0, X0; \
	VAESENCLAST 224(AX), X0, X0

// GFMUL sets a to a·b reduced (both in GHASH's byte-reversed form, b the
// pre-shifted key or a power of it); p holds poly; t0-t2 are scratch.
#define GFMUL(a, b, p, t0, t1, t2) \
	VPCLMULQDQ $0x00, b, a, t0; \
	VPCLMULQDQ $0x11, b, a, t1; \
	VPCLMULQDQ $0x01, b, a, t2; \
	VPCLMULQDQ $0x10, b, a, a;  \
	VPXOR      t2, a, a;        \
	VPSLLDQ    $8, a, t2;       \
	VPSRLDQ    $8, a, a;        \
	VPXOR      t2, t0, t0;      \
	VPXOR      a, t1, t1;       \
	VPCLMULQDQ $0x10, p, t0, t2; \
	VPSHUFD    $0x4e, t0, t0;   \
	VPXOR      t2, t0, t0;      \
	VPCLMULQDQ $0x10, p, t0, t2; \
	VPSHUFD    $0x4e, t0, t0;   \
	VPXOR      t2, t0, t0;      \
	VPXOR      t1, t0, a

// func initKey(rk *[240]byte, htab *[256]byte)
//
// Computes the hash key H = AES(K, 0) and stores H·x, (H·x)^2, ...,
// (H·x)^16 in the table, highest power first: htab[16*i] holds power
// 16-i, so a run of sixteen blocks meets the powers in table order.
TEXT ·initKey(SB), NOSPLIT, $0-16
	MOVQ rk+0(FP), AX
	MOVQ htab+8(FP), DI
	VPXOR       X0, X0, X0
	AES256_X0
	VPSHUFB     bswapMask<>(SB), X0, X0
	VMOVDQU     poly<>(SB), X10

	// H·x: shift the 128-bit value left by one; the bit shifted out at
	// the top comes back as poly.
	VPSHUFD $0xff, X0, X1
	VPSRAD  $31, X1, X1
	VPAND   X10, X1, X1
	VPSRLQ  $63, X0, X2
	VPSLLDQ $8, X2, X2
	VPSLLQ  $1, X0, X0
	VPXOR   X2, X0, X0
	VPXOR   X1, X0, X0

	VMOVDQU X0, 240(DI)
	VMOVDQA X0, X3
	MOVQ    $15, CX
	LEAQ    224(DI), DI

powers:
	GFMUL(X3, X0, X10, X4, X5, X6)
	VMOVDQU X3, 0(DI)
	SUBQ    $16, DI
	DECQ    CX
	JNZ     powers

	VPXOR X0, X0, X0
	VPXOR X1, X1, X1
	VPXOR X2, X2, X2
	VPXOR X3, X3, X3
	VPXOR X4, X4, X4
	VPXOR X5, X5, X5
	VPXOR X6, X6, X6
	VZEROUPPER
	RET

// MUL4 multiplies the four blocks in d by the four key powers in h and
// adds the unreduced products to lo, hi and mid; t0 and t1 are scratch.
#define MUL4(d, h, t0, t1) \
	VPCLMULQDQ $0x00, h, d, t0;  \
	VPXORQ     t0, Z5, Z5;       \
	VPCLMULQDQ $0x11, h, d, t0;  \
	VPXORQ     t0, Z6, Z6;       \
	VPCLMULQDQ $0x01, h, d, t0;  \
	VPCLMULQDQ $0x10, h, d, t1;  \
	VPTERNLOGD $0x96, t0, t1, Z7

// func ghashBlocks(htab *[256]byte, y *[16]byte, src *byte, n int)
//
// Adds the n 16-byte blocks at src to the GHASH state y (byte-reversed
// form, as this file keeps it).
//
// Registers: X0 the state; Z1-Z4 sixteen data blocks; Z5, Z6, Z7 the low,
// high and middle halves of the products summed over sixteen blocks;
// Z9 bswapMask in every lane; X10 poly; Z16-Z19 the key powers.
TEXT ·ghashBlocks(SB), NOSPLIT, $0-32
	MOVQ htab+0(FP), AX
	MOVQ y+8(FP), BX
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), CX
	VBROADCASTI32X4 bswapMask<>(SB), Z9
	VMOVDQU         poly<>(SB), X10
	VMOVDQU         0(BX), X0
	CMPQ            CX, $16
	JB              single
	VMOVDQU64       0(AX), Z16
	VMOVDQU64       64(AX), Z17
	VMOVDQU64       128(AX), Z18
	VMOVDQU64       192(AX), Z19

loop16:
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPSHUFB   Z9, Z1, Z1
	VPSHUFB   Z9, Z2, Z2
	VPSHUFB   Z9, Z3, Z3
	VPSHUFB   Z9, Z4, Z4
	// The state joins the first block; X0's upper lanes are zero.
	VPXORQ     Z0, Z1, Z1
	VPCLMULQDQ $0x00, Z16, Z1, Z5
	VPCLMULQDQ $0x11, Z16, Z1, Z6
	VPCLMULQDQ $0x01, Z16, Z1, Z7
	VPCLMULQDQ $0x10, Z16, Z1, Z8
	VPXORQ     Z8, Z7, Z7
	MUL4(Z2, Z17, Z8, Z11)
	MUL4(Z3, Z18, Z8, Z11)
	MUL4(Z4, Z19, Z8, Z11)

	// Split the middle halves into the low and high sums, then add the
	// four lanes of each.
	VPSLLDQ       $8, Z7, Z8
	VPSRLDQ       $8, Z7, Z7
	VPXORQ        Z8, Z5, Z5
	VPXORQ        Z7, Z6, Z6
	VEXTRACTI64X4 $1, Z5, Y8
	VPXOR         Y8, Y5, Y5
	VEXTRACTI128  $1, Y5, X8
	VPXOR         X8, X5, X5
	VEXTRACTI64X4 $1, Z6, Y8
	VPXOR         Y8, Y6, Y6
	VEXTRACTI128  $1, Y6, X8
	VPXOR         X8, X6, X6

	// Reduce.
	VPCLMULQDQ $0x10, X10, X5, X8
	VPSHUFD    $0x4e, X5, X5
	VPXOR      X8, X5, X5
	VPCLMULQDQ $0x10, X10, X5, X8
	VPSHUFD    $0x4e, X5, X5
	VPXOR      X8, X5, X5
	VPXOR      X6, X5, X0

	ADDQ $256, SI
	SUBQ $16, CX
	CMPQ CX, $16
	JAE  loop16

single:
	TESTQ   CX, CX
	JZ      done
	VMOVDQU 240(AX), X7

loop1:
	VMOVDQU 0(SI), X1
	VPSHUFB X9, X1, X1
	VPXOR   X1, X0, X0
	GFMUL(X0, X7, X10, X2, X3, X4)
	ADDQ    $16, SI
	DECQ    CX
	JNZ     loop1

done:
	VMOVDQU X0, 0(BX)
	VZEROUPPER
	RET

// ROUND4 runs one AES round with the key in k on the four registers of
// counter blocks.
#define ROUND4(k) \
	VAESENC k, Z0, Z0; \
	VAESENC k, Z1, Z1; \
	VAESENC k, Z2, Z2; \
	VAESENC k, Z3, Z3

// func ctrBlocks(rk *[240]byte, ctr *[16]byte, dst, src *byte, n int)
//
// XORs the n 16-byte blocks at src with the AES-256 key stream starting
// at counter block ctr (incremented with inc32) and writes them to dst;
// dst may be src.
//
// Registers: Z0-Z3 sixteen counter blocks being encrypted; Z8 the next
// four counters (byte-reversed); Z9 bswapMask; Z10 inc4; Z16-Z30 the
// round keys in every lane.
TEXT ·ctrBlocks(SB), NOSPLIT, $0-40
	MOVQ rk+0(FP), AX
	MOVQ ctr+8(FP), BX
	MOVQ dst+16(FP), DI
	MOVQ src+24(FP), SI
	MOVQ n+32(FP), CX
	VBROADCASTI32X4 bswapMask<>(SB), Z9
	VMOVDQU         0(BX), X8
	VPSHUFB         X9, X8, X8
	CMPQ            CX, $16
	JB              single

	VSHUFI32X4      $0, Z8, Z8, Z8
	VPADDD          laneInc<>(SB), Z8, Z8
	VMOVDQU64       inc4<>(SB), Z10
	VBROADCASTI32X4 0(AX), Z16
	VBROADCASTI32X4 16(AX), Z17
	VBROADCASTI32X4 32(AX), Z18
	VBROADCASTI32X4 48(AX), Z19
	VBROADCASTI32X4 64(AX), Z20
	VBROADCASTI32X4 80(AX), Z21
	VBROADCASTI32X4 96(AX), Z22
	VBROADCASTI32X4 112(AX), Z23
	VBROADCASTI32X4 128(AX), Z24
	VBROADCASTI32X4 144(AX), Z25
	VBROADCASTI32X4 160(AX), Z26
	VBROADCASTI32X4 176(AX), Z27
	VBROADCASTI32X4 192(AX), Z28
	VBROADCASTI32X4 208(AX), Z29
	VBROADCASTI32X4 224(AX), Z30

loop16:
	VPSHUFB Z9, Z8, Z0
	VPADDD  Z10, Z8, Z8
	VPSHUFB Z9, Z8, Z1
	VPADDD  Z10, Z8, Z8
	VPSHUFB Z9, Z8, Z2
	VPADDD  Z10, Z8, Z8
	VPSHUFB Z9, Z8, Z3
	VPADDD  Z10, Z8, Z8
	VPXORQ  Z16, Z0, Z0
	VPXORQ  Z16, Z1, Z1
	VPXORQ  Z16, Z2, Z2
	VPXORQ  Z16, Z3, Z3
	ROUND4(Z17)
	ROUND4(Z18)
	ROUND4(Z19)
	ROUND4(Z20)
	ROUND4(Z21)
	ROUND4(Z22)
	ROUND4(Z23)
	ROUND4(Z24)
	ROUND4(Z25)
	ROUND4(Z26)
	ROUND4(Z27)
	ROUND4(Z28)
	ROUND4(Z29)
	VAESENCLAST Z30, Z0, Z0
	VAESENCLAST Z30, Z1, Z1
	VAESENCLAST Z30, Z2, Z2
	VAESENCLAST Z30, Z3, Z3
	VPXORQ      0(SI), Z0, Z0
	VPXORQ      64(SI), Z1, Z1
	VPXORQ      128(SI), Z2, Z2
	VPXORQ      192(SI), Z3, Z3
	VMOVDQU64   Z0, 0(DI)
	VMOVDQU64   Z1, 64(DI)
	VMOVDQU64   Z2, 128(DI)
	VMOVDQU64   Z3, 192(DI)
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $16, CX
	CMPQ        CX, $16
	JAE         loop16

	// Lane 0 of Z8 (X8) is the next counter.
single:
	TESTQ   CX, CX
	JZ      done
	VMOVDQU laneInc<>+16(SB), X11

loop1:
	VPSHUFB     X9, X8, X0
	VPADDD      X11, X8, X8
	AES256_X0
	VPXOR       0(SI), X0, X0
	VMOVDQU     X0, 0(DI)
	ADDQ        $16, SI
	ADDQ        $16, DI
	DECQ        CX
	JNZ         loop1

done:
	// Round keys were broadcast into Z16-Z30 and counter blocks left in
	// Z0-Z3: clear the registers that held key material.
	VPXORQ Z16, Z16, Z16
	VPXORQ Z17, Z17, Z17
	VPXORQ Z18, Z18, Z18
	VPXORQ Z19, Z19, Z19
	VPXORQ Z20, Z20, Z20
	VPXORQ Z21, Z21, Z21
	VPXORQ Z22, Z22, Z22
	VPXORQ Z23, Z23, Z23
	VPXORQ Z24, Z24, Z24
	VPXORQ Z25, Z25, Z25
	VPXORQ Z26, Z26, Z26
	VPXORQ Z27, Z27, Z27
	VPXORQ Z28, Z28, Z28
	VPXORQ Z29, Z29, Z29
	VPXORQ Z30, Z30, Z30
	VZEROUPPER
	RET
