//go:build amd64 && !purego

#include "textflag.h"

// XTS-AES for one sector with AES-NI.
//
// Register use in encryptSectorAsm and decryptSectorAsm:
//	AX  round keys of the data key (encryption or inverse schedule)
//	BX  round keys of the tweak key (always the encryption schedule)
//	CX  bytes left
//	DX  number of rounds, 10 or 14
//	SI  src, DI dst
//	R8  round key pointer while running the rounds, R9 round counter
//	X0-X7  eight blocks in flight
//	X8  tweak of the next block to load
//	X9  scratch, X10 reduction mask, X11 current round key
// The eight tweaks of the blocks in flight are parked in the 128-byte frame
// (0(SP)..127(SP)): with eight blocks, a round key and the running tweak
// there are not enough XMM registers for them, and an L1 load is cheap.

// gfMask holds, per 32-bit lane, what MUL_ALPHA adds when a lane's top bit
// is set in the shuffled copy: 0x87 (x^7+x^2+x+1, the reduction of x^128)
// in lane 0 and the carry from bit 63 into bit 64 in lane 2.
DATA gfMask<>+0x00(SB)/4, $0x00000087
DATA gfMask<>+0x04(SB)/4, $0x00000000
DATA gfMask<>+0x08(SB)/4, $0x00000001
DATA gfMask<>+0x0c(SB)/4, $0x00000000
GLOBL gfMask<>(SB), RODATA|NOPTR, $16

// MUL_ALPHA multiplies the tweak t by alpha (x) in GF(2^128), P1619's
// little-endian convention. PADDQ shifts both 64-bit halves left by one
// and drops bits 63 and 127. PSHUFD $0x13 copies lane 3 (holding bit 127)
// to lane 0 and lane 1 (holding bit 63) to lane 2; PSRAL $31 turns each
// lane into all ones or zeros by its sign bit; the mask keeps 0x87 and the
// carry bit, which are then added back.
#define MUL_ALPHA(t, tmp) \
	PSHUFD $0x13, t, tmp; \
	PSRAL  $31, tmp;      \
	PAND   X10, tmp;      \
	PADDQ  t, t;          \
	PXOR   tmp, t

// LOAD1 loads the block at off, whitens it with the current tweak, parks
// the tweak at off(SP) for the output side and advances the tweak.
#define LOAD1(off, x) \
	MOVOU X8, off(SP);  \
	MOVOU off(SI), x;   \
	PXOR  X8, x;        \
	MUL_ALPHA(X8, X9)

// STORE1 whitens a finished block with its parked tweak and stores it.
#define STORE1(off, x) \
	MOVOU off(SP), X9; \
	PXOR  X9, x;       \
	MOVOU x, off(DI)

// ROUND8 applies one round (op: AESENC, AESDEC, their LAST forms, or PXOR
// for the initial key addition) with the round key at off(R8) to all eight
// blocks. Eight independent blocks hide the AES unit's latency, which is
// several times its throughput.
#define ROUND8(op, off) \
	MOVUPS off(R8), X11; \
	op X11, X0;          \
	op X11, X1;          \
	op X11, X2;          \
	op X11, X3;          \
	op X11, X4;          \
	op X11, X5;          \
	op X11, X6;          \
	op X11, X7

// XTS_SECTOR is the body shared by encryption and decryption; they differ
// only in the round instructions applied to the data. In order:
//   - the tweak T = E_K2(sector); MOVQ zero-fills the upper half, which is
//     the plain64 padding;
//   - loop8: eight blocks per pass. AES-256 runs four extra rounds first and
//     then shares the last ten with AES-128 by moving the key pointer, so
//     there is no per-round loop in the hot path;
//   - tail: sectors that are not a multiple of 128 bytes finish one block
//     at a time;
//   - done: the round key and tweak registers are cleared so no key
//     material outlives the call in registers.
#define XTS_SECTOR(op, oplast) \
	MOVQ nr+0(FP), DX;           \
	MOVQ xk+8(FP), AX;           \
	MOVQ tk+16(FP), BX;          \
	MOVQ dst+32(FP), DI;         \
	MOVQ src+40(FP), SI;         \
	MOVQ n+48(FP), CX;           \
	MOVOU gfMask<>(SB), X10;     \
	MOVQ sector+24(FP), X8;      \
	MOVQ BX, R8;                 \
	MOVQ DX, R9;                 \
	DECQ R9;                     \
	MOVUPS (R8), X11;            \
	PXOR X11, X8;                \
tweakRound:                      \
	ADDQ $16, R8;                \
	MOVUPS (R8), X11;            \
	AESENC X11, X8;              \
	DECQ R9;                     \
	JNZ tweakRound;              \
	MOVUPS 16(R8), X11;          \
	AESENCLAST X11, X8;          \
loop8:                           \
	CMPQ CX, $128;               \
	JB tail;                     \
	LOAD1(0, X0);                \
	LOAD1(16, X1);               \
	LOAD1(32, X2);               \
	LOAD1(48, X3);               \
	LOAD1(64, X4);               \
	LOAD1(80, X5);               \
	LOAD1(96, X6);               \
	LOAD1(112, X7);              \
	MOVQ AX, R8;                 \
	ROUND8(PXOR, 0);             \
	CMPQ DX, $10;                \
	JEQ last10;                  \
	ROUND8(op, 16);              \
	ROUND8(op, 32);              \
	ROUND8(op, 48);              \
	ROUND8(op, 64);              \
	ADDQ $64, R8;                \
last10:                          \
	ROUND8(op, 16);              \
	ROUND8(op, 32);              \
	ROUND8(op, 48);              \
	ROUND8(op, 64);              \
	ROUND8(op, 80);              \
	ROUND8(op, 96);              \
	ROUND8(op, 112);             \
	ROUND8(op, 128);             \
	ROUND8(op, 144);             \
	ROUND8(oplast, 160);         \
	STORE1(0, X0);               \
	STORE1(16, X1);              \
	STORE1(32, X2);              \
	STORE1(48, X3);              \
	STORE1(64, X4);              \
	STORE1(80, X5);              \
	STORE1(96, X6);              \
	STORE1(112, X7);             \
	ADDQ $128, SI;               \
	ADDQ $128, DI;               \
	SUBQ $128, CX;               \
	JMP loop8;                   \
tail:                            \
	TESTQ CX, CX;                \
	JZ done;                     \
	MOVOU (SI), X0;              \
	PXOR X8, X0;                 \
	MOVQ AX, R8;                 \
	MOVQ DX, R9;                 \
	DECQ R9;                     \
	MOVUPS (R8), X11;            \
	PXOR X11, X0;                \
tailRound:                       \
	ADDQ $16, R8;                \
	MOVUPS (R8), X11;            \
	op X11, X0;                  \
	DECQ R9;                     \
	JNZ tailRound;               \
	MOVUPS 16(R8), X11;          \
	oplast X11, X0;              \
	PXOR X8, X0;                 \
	MOVOU X0, (DI);              \
	MUL_ALPHA(X8, X9);           \
	ADDQ $16, SI;                \
	ADDQ $16, DI;                \
	SUBQ $16, CX;                \
	JMP tail;                    \
done:                            \
	PXOR X11, X11;               \
	PXOR X8, X8;                 \
	PXOR X9, X9;                 \
	RET

// func encryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)
TEXT ·encryptSectorAsm(SB), NOSPLIT, $128-56
	XTS_SECTOR(AESENC, AESENCLAST)

// func decryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int)
TEXT ·decryptSectorAsm(SB), NOSPLIT, $128-56
	XTS_SECTOR(AESDEC, AESDECLAST)

// func subWord(w uint32) uint32
//
// SubWord of the key schedule (FIPS 197, 5.2): AESENCLAST with a zero round
// key is ShiftRows then SubBytes; with the word copied into all four
// columns ShiftRows changes nothing, so lane 0 holds S(w).
TEXT ·subWord(SB), NOSPLIT, $0-12
	MOVL   w+0(FP), X0
	PSHUFD $0, X0, X0
	PXOR   X1, X1
	AESENCLAST X1, X0
	MOVL   X0, ret+8(FP)
	RET

// func invMixColumns(dst, src *[16]byte)
//
// InvMixColumns of one round key, turning an encryption round key into the
// one AESDEC needs (FIPS 197, 5.3.5, equivalent inverse cipher).
TEXT ·invMixColumns(SB), NOSPLIT, $0-16
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVOU  (SI), X0
	AESIMC X0, X0
	MOVOU  X0, (DI)
	PXOR   X0, X0
	RET
