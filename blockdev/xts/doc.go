// Package xts implements AES-XTS (IEEE P1619 / NIST SP 800-38E) for the
// data area of LUKS2 images with the dm-crypt cipher "aes-xts-plain64".
//
// The XTS key is the concatenation of two AES keys of equal length: 32
// bytes select XTS-AES-128, 64 bytes XTS-AES-256. The first half encrypts
// the data, the second half encrypts the tweak. With plain64 the tweak of a
// sector is its number as a little-endian uint64 padded with zeros to 16
// bytes, exactly the IEEE P1619 "data unit sequence number". Which unit the
// number counts is the caller's business. EncryptSectors numbers
// consecutive sectors 1 apart, which is dm-crypt's iv_large_sectors
// counting; cryptsetup does not use that for LUKS2, whose IVs count
// 512-byte units at every sector size (a 4096-byte sector k has IV 8k),
// so LUKS2 callers with larger sectors use EncryptSector per sector.
//
// Sectors must be a non-zero multiple of 16 bytes. Ciphertext stealing,
// which P1619 defines for data units that are not, is not implemented:
// disk sectors never need it, and leaving it out keeps the fast path a
// plain run of whole blocks.
//
// On amd64 with AES-NI the work is done by a small assembly routine that
// keeps eight blocks in flight and advances the tweak in registers. Where
// the CPU also has AVX-512 with VAES, sectors that are a multiple of 256
// bytes (512 and 4096 are) go through a second routine that runs each AES
// round on four blocks per instruction, sixteen blocks per pass, with the
// four tweaks of a register advanced together by α^4: about 2.5 times the
// AES-NI routine's speed (go test -bench . ./blockdev/xts/). Other
// machines, and builds with the purego tag, use crypto/aes one block at a
// time, which is correct but about ten times slower than AES-NI.
//
// XTS provides confidentiality only: a changed ciphertext block decrypts to
// random garbage instead of being detected.
package xts
