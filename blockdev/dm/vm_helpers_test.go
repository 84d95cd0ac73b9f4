package dm_test

import (
	"crypto/sha256"
	"encoding/binary"
)

// Shared by the host and the guest side of the VM tests.
const (
	keyPath   = "/vmtest/key"                          // the test key inside the VM
	luksUUID  = "3f2b8c1e-6d4a-4e2f-9b7c-1a2b3c4d5e6f" // uuid for CryptUUID
	diskBytes = 4 << 20                                // size of each disk image
	sector    = 512
)

// pattern is the plaintext of a 512-byte sector: SHA-256 of a label and
// the sector number, repeated, so every sector differs and both sides
// can compute it.
func pattern(n uint64) []byte {
	var in [16]byte
	copy(in[:8], "kmsagent")
	binary.LittleEndian.PutUint64(in[8:], n)
	sum := sha256.Sum256(in[:])
	out := make([]byte, 0, sector)
	for len(out) < sector {
		out = append(out, sum[:]...)
	}
	return out
}
