package contentenc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// CurrentVersion is the on-disk format version stored in each header.
	CurrentVersion = 2
	// HeaderLen is the size of the file header: 2 bytes version, 16 bytes ID.
	HeaderLen = 18
	// FileIDLen is the length of the random per-file ID.
	FileIDLen = 16

	versionLen = HeaderLen - FileIDLen
)

// ErrHeader reports a file header that cannot be used.
var ErrHeader = errors.New("contentenc: invalid file header")

// FileHeader is the header at the start of every non-empty cipher file.
// Only the ID is stored: the version is always CurrentVersion.
type FileHeader struct {
	ID [FileIDLen]byte
}

// RandomHeader returns a header with a fresh random file ID.
func RandomHeader() (FileHeader, error) {
	var h FileHeader
	if _, err := rand.Read(h.ID[:]); err != nil {
		return FileHeader{}, fmt.Errorf("contentenc: random file ID: %w", err)
	}
	// ParseHeader rejects an all-zero ID as a zeroed-out file, so never
	// write one, however unlikely.
	if isZero(h.ID[:]) {
		return FileHeader{}, fmt.Errorf("contentenc: random file ID is all-zero")
	}
	return h, nil
}

// Pack serialises the header into its 18 on-disk bytes.
func (h FileHeader) Pack() []byte {
	b := make([]byte, HeaderLen)
	binary.BigEndian.PutUint16(b, CurrentVersion)
	copy(b[versionLen:], h.ID[:])
	return b
}

// ParseHeader parses the 18 on-disk header bytes. It refuses a wrong
// length, any version but CurrentVersion, and an all-zero file ID (what a
// crash between extending and writing a file leaves behind).
func ParseHeader(b []byte) (FileHeader, error) {
	if len(b) != HeaderLen {
		return FileHeader{}, fmt.Errorf("%w: length %d, want %d", ErrHeader, len(b), HeaderLen)
	}
	if v := binary.BigEndian.Uint16(b); v != CurrentVersion {
		return FileHeader{}, fmt.Errorf("%w: version %d, want %d", ErrHeader, v, CurrentVersion)
	}
	var h FileHeader
	copy(h.ID[:], b[versionLen:])
	if isZero(h.ID[:]) {
		return FileHeader{}, fmt.Errorf("%w: file ID is all-zero", ErrHeader)
	}
	return h, nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
