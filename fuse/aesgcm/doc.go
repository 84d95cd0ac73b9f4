// Package aesgcm is AES-256-GCM with 16-byte nonces and 16-byte tags, the
// content cipher of the gocryptfs v2 format, for CPUs with VAES and
// VPCLMULQDQ on 512-bit registers.
//
// Why not crypto/cipher: Go's GCM runs eight blocks at a time on 128-bit
// registers and reaches about 4.5 GB/s on one core of the machines this
// was measured on; on a share, decrypting is most of the CPU a cold
// sequential read costs. With VAES one instruction runs an AES round on
// four blocks, and VPCLMULQDQ multiplies four blocks for GHASH, so this
// package handles sixteen blocks per iteration and runs several times
// faster (go test -bench . ./fuse/aesgcm/ prints both). It also keeps the
// expanded key and the hash key powers in locked memory that Wipe zeroes
// and unmaps, where crypto/aes leaves its key schedule on the heap until
// the process ends.
//
// What it does: the nonce becomes the first counter block J0 =
// GHASH(nonce ‖ 0^64 ‖ [128]_64), as NIST SP 800-38D prescribes for
// nonces that are not 12 bytes; the key stream is AES of J0+1, J0+2, ...
// (inc32: only the last four bytes count, wrapping); the tag is GHASH
// over the additional data and the ciphertext, each zero-padded to whole
// blocks, and the two bit lengths, XORed with AES(J0). Open checks the
// tag over the ciphertext before it decrypts anything, so a forged
// message leaves dst untouched.
//
// Two passes over the data (counter mode, then GHASH, or GHASH first when
// opening) instead of one interleaved loop: the callers seal and open
// 4 KiB blocks, which stay in the first-level cache between the passes,
// and two simple loops are easier to check than one interleaved one.
//
// New fails with ErrUnsupported where the instructions are missing (and
// in builds with the purego tag); callers then use crypto/cipher, which
// computes the same bytes. The tests compare every operation with
// crypto/cipher on random keys, nonces and lengths, including counters
// that wrap.
package aesgcm
