// Package contentenc encrypts file contents in the gocryptfs v2 format.
//
// A non-empty cipher file is an 18-byte header (uint16 version 2, big
// endian, then a random 16-byte file ID) followed by blocks. Each block is
// at most 4096 plaintext bytes sealed with AES-256-GCM as
//
//	nonce (16 random bytes) ‖ ciphertext ‖ tag (16 bytes)
//
// with the additional data uint64 block number (big endian) ‖ file ID, so a
// block cannot be moved within a file or between files undetected. An
// empty file stays empty (no header). A block that is entirely zero bytes
// is a hole left by a sparse write and reads back as zeros.
//
// Symlink targets and xattr values use the same block sealing with block
// number 0 and no file ID (see xattr.go).
package contentenc
