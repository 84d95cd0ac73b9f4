package local

import (
	"encoding/binary"
	"errors"
	"fmt"

	"kmsagent/agent/uuid"
)

// A wrapped key ("blob") is self-describing so the format can evolve and so
// a blob names the CMK version that sealed it:
//
//	offset  size  field
//	0       1     format version (1)
//	1       16    CMK id (UUID, binary)
//	17      4     CMK version, big endian
//	21      12    AES-GCM nonce
//	33      n+16  AES-256-GCM ciphertext of the data key, with tag
//
// The AAD is a domain label, the 21 header bytes and the binding, so none of
// them can be changed without the open failing.
const (
	blobVersion1   = 1
	blobHeaderSize = 1 + 16 + 4
	nonceSize      = 12
	tagSize        = 16
	blobMinSize    = blobHeaderSize + nonceSize + tagSize + 1
	// maxDataKeySize bounds generated and imported data keys (as AWS does).
	maxDataKeySize = 1024
	blobMaxSize    = blobHeaderSize + nonceSize + maxDataKeySize + tagSize
)

const aadLabel = "kmsagent local key wrap v1\x00"

type blob struct {
	keyID      uuid.UUID
	keyVersion uint32
	nonce      []byte
	sealed     []byte
	header     []byte
}

var errBlob = errors.New("malformed wrapped key")

// parseBlob checks the structure of a wrapped key without any key material.
// The returned slices alias b.
func parseBlob(b []byte) (*blob, error) {
	if len(b) < blobMinSize || len(b) > blobMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d to %d", errBlob, len(b), blobMinSize, blobMaxSize)
	}
	if b[0] != blobVersion1 {
		return nil, fmt.Errorf("%w: format version %d, this build reads version %d", errBlob, b[0], blobVersion1)
	}
	var p blob
	copy(p.keyID[:], b[1:17])
	p.keyVersion = binary.BigEndian.Uint32(b[17:21])
	if p.keyVersion == 0 {
		return nil, fmt.Errorf("%w: key version 0", errBlob)
	}
	p.header = b[:blobHeaderSize]
	p.nonce = b[blobHeaderSize : blobHeaderSize+nonceSize]
	p.sealed = b[blobHeaderSize+nonceSize:]
	return &p, nil
}

func appendBlobHeader(dst []byte, keyID uuid.UUID, version uint32) []byte {
	dst = append(dst, blobVersion1)
	dst = append(dst, keyID[:]...)
	return binary.BigEndian.AppendUint32(dst, version)
}

func blobAAD(header []byte, binding string) []byte {
	aad := make([]byte, 0, len(aadLabel)+len(header)+len(binding))
	aad = append(aad, aadLabel...)
	aad = append(aad, header...)
	return append(aad, binding...)
}
