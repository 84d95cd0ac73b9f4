//go:build amd64 && !purego

#include "textflag.h"

// XTS-AES for one sector with VAES on 512-bit registers: sixteen blocks
// per pass, four to a register, for sectors that are a multiple of 256
// bytes (512 and 4096 are).
//
// Tweaks: lane j of a register holds the tweak of block j (T·α^j in
// P1619's little-endian convention). The four registers of a pass hold
// blocks 0-3, 4-7, 8-11 and 12-15, so each is the previous one times α^4,
// and the next pass starts at the last one times α^4.
//
// Register use:
//	AX  round keys of the data key, BX of the tweak key, DX rounds (10/14)
//	SI  src, DI dst, CX bytes left
//	Z0-Z3    sixteen blocks
//	Z8-Z11   their tweaks
//	Z12-Z13  scratch
//	Z14      0x87 in the low half of every lane (the reduction of x^128)
//	Z16-Z30  the data key's round keys in every lane

DATA xtsPoly<>+0x00(SB)/8, $0x87
DATA xtsPoly<>+0x08(SB)/8, $0
GLOBL xtsPoly<>(SB), RODATA|NOPTR, $16

// MULX multiplies each 128-bit lane of t by α^k (k = 1 or 4): a 128-bit
// shift left by k, with the k bits shifted out of the top multiplied by
// 0x87 and added at the bottom. s1 and s2 are scratch, p holds xtsPoly in
// every lane.
#define MULX(k, t, s1, s2, p) \
	VPSRLQ     $(64-k), t, s1;    \
	VPSLLDQ    $8, s1, s2;        \
	VPSRLDQ    $8, s1, s1;        \
	VPSLLQ     $k, t, t;          \
	VPCLMULQDQ $0x00, p, s1, s1;  \
	VPTERNLOGD $0x96, s1, s2, t

#define ROUND4(op, k) \
	op k, Z0, Z0; \
	op k, Z1, Z1; \
	op k, Z2, Z2; \
	op k, Z3, Z3

// XTS_VAES is the body shared by encryption and decryption (op and
// oplast: the round instructions applied to the data).
#define XTS_VAES(op, oplast) \
	MOVQ nr+0(FP), DX;                   \
	MOVQ xk+8(FP), AX;                   \
	MOVQ tk+16(FP), BX;                  \
	MOVQ dst+32(FP), DI;                 \
	MOVQ src+40(FP), SI;                 \
	MOVQ n+48(FP), CX;                   \
	VBROADCASTI32X4 xtsPoly<>(SB), Z14;  \
	/* T = E_K2(sector): the tweak key's rounds, 10 or 14. */ \
	VMOVQ       sector+24(FP), X8;       \
	VPXOR       0(BX), X8, X8;           \
	VAESENC     16(BX), X8, X8;          \
	VAESENC     32(BX), X8, X8;          \
	VAESENC     48(BX), X8, X8;          \
	VAESENC     64(BX), X8, X8;          \
	VAESENC     80(BX), X8, X8;          \
	VAESENC     96(BX), X8, X8;          \
	VAESENC     112(BX), X8, X8;         \
	VAESENC     128(BX), X8, X8;         \
	VAESENC     144(BX), X8, X8;         \
	CMPQ        DX, $10;                 \
	JEQ         tweakLast10;             \
	VAESENC     160(BX), X8, X8;         \
	VAESENC     176(BX), X8, X8;         \
	VAESENC     192(BX), X8, X8;         \
	VAESENC     208(BX), X8, X8;         \
	VAESENCLAST 224(BX), X8, X8;         \
	JMP         tweakDone;               \
tweakLast10:                             \
	VAESENCLAST 160(BX), X8, X8;         \
tweakDone:                               \
	/* Lanes: T, Tα, Tα², Tα³. */        \
	VMOVDQA      X8, X9;                 \
	MULX(1, X9, X12, X13, X14);          \
	VMOVDQA      X9, X10;                \
	MULX(1, X10, X12, X13, X14);         \
	VMOVDQA      X10, X11;               \
	MULX(1, X11, X12, X13, X14);         \
	VINSERTI32X4 $1, X9, Z8, Z8;         \
	VINSERTI32X4 $2, X10, Z8, Z8;        \
	VINSERTI32X4 $3, X11, Z8, Z8;        \
	/* The data key's round keys, in every lane. */ \
	VBROADCASTI32X4 0(AX), Z16;          \
	VBROADCASTI32X4 16(AX), Z17;         \
	VBROADCASTI32X4 32(AX), Z18;         \
	VBROADCASTI32X4 48(AX), Z19;         \
	VBROADCASTI32X4 64(AX), Z20;         \
	VBROADCASTI32X4 80(AX), Z21;         \
	VBROADCASTI32X4 96(AX), Z22;         \
	VBROADCASTI32X4 112(AX), Z23;        \
	VBROADCASTI32X4 128(AX), Z24;        \
	VBROADCASTI32X4 144(AX), Z25;        \
	VBROADCASTI32X4 160(AX), Z26;        \
	CMPQ            DX, $10;             \
	JEQ             loop16;              \
	VBROADCASTI32X4 176(AX), Z27;        \
	VBROADCASTI32X4 192(AX), Z28;        \
	VBROADCASTI32X4 208(AX), Z29;        \
	VBROADCASTI32X4 224(AX), Z30;        \
loop16:                                  \
	VMOVDQA64 Z8, Z9;                    \
	MULX(4, Z9, Z12, Z13, Z14);          \
	VMOVDQA64 Z9, Z10;                   \
	MULX(4, Z10, Z12, Z13, Z14);         \
	VMOVDQA64 Z10, Z11;                  \
	MULX(4, Z11, Z12, Z13, Z14);         \
	VPXORQ    0(SI), Z8, Z0;             \
	VPXORQ    64(SI), Z9, Z1;            \
	VPXORQ    128(SI), Z10, Z2;          \
	VPXORQ    192(SI), Z11, Z3;          \
	VPXORQ    Z16, Z0, Z0;               \
	VPXORQ    Z16, Z1, Z1;               \
	VPXORQ    Z16, Z2, Z2;               \
	VPXORQ    Z16, Z3, Z3;               \
	ROUND4(op, Z17);                     \
	ROUND4(op, Z18);                     \
	ROUND4(op, Z19);                     \
	ROUND4(op, Z20);                     \
	ROUND4(op, Z21);                     \
	ROUND4(op, Z22);                     \
	ROUND4(op, Z23);                     \
	ROUND4(op, Z24);                     \
	ROUND4(op, Z25);                     \
	CMPQ      DX, $10;                   \
	JEQ       last10;                    \
	ROUND4(op, Z26);                     \
	ROUND4(op, Z27);                     \
	ROUND4(op, Z28);                     \
	ROUND4(op, Z29);                     \
	ROUND4(oplast, Z30);                 \
	JMP       whiten;                    \
last10:                                  \
	ROUND4(oplast, Z26);                 \
whiten:                                  \
	VPXORQ    Z8, Z0, Z0;                \
	VPXORQ    Z9, Z1, Z1;                \
	VPXORQ    Z10, Z2, Z2;               \
	VPXORQ    Z11, Z3, Z3;               \
	VMOVDQU64 Z0, 0(DI);                 \
	VMOVDQU64 Z1, 64(DI);                \
	VMOVDQU64 Z2, 128(DI);               \
	VMOVDQU64 Z3, 192(DI);               \
	VMOVDQA64 Z11, Z8;                   \
	MULX(4, Z8, Z12, Z13, Z14);          \
	ADDQ      $256, SI;                  \
	ADDQ      $256, DI;                  \
	SUBQ      $256, CX;                  \
	JNZ       loop16;                    \
	/* No key material or tweak outlives the call in registers. */ \
	VPXORQ Z8, Z8, Z8;                   \
	VPXORQ Z9, Z9, Z9;                   \
	VPXORQ Z10, Z10, Z10;                \
	VPXORQ Z11, Z11, Z11;                \
	VPXORQ Z16, Z16, Z16;                \
	VPXORQ Z17, Z17, Z17;                \
	VPXORQ Z18, Z18, Z18;                \
	VPXORQ Z19, Z19, Z19;                \
	VPXORQ Z20, Z20, Z20;                \
	VPXORQ Z21, Z21, Z21;                \
	VPXORQ Z22, Z22, Z22;                \
	VPXORQ Z23, Z23, Z23;                \
	VPXORQ Z24, Z24, Z24;                \
	VPXORQ Z25, Z25, Z25;                \
	VPXORQ Z26, Z26, Z26;                \
	VPXORQ Z27, Z27, Z27;                \
	VPXORQ Z28, Z28, Z28;                \
	VPXORQ Z29, Z29, Z29;                \
	VPXORQ Z30, Z30, Z30;                \
	VZEROUPPER;                          \
	RET

// func encryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)
TEXT ·encryptSectorVAES(SB), NOSPLIT, $0-56
	XTS_VAES(VAESENC, VAESENCLAST)

// func decryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)
TEXT ·decryptSectorVAES(SB), NOSPLIT, $0-56
	XTS_VAES(VAESDEC, VAESDECLAST)
