// Package uuid makes and parses the random (version 4) UUIDs that name
// keys and volumes.
package uuid

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// UUID is a UUID in binary form.
type UUID [16]byte

// New returns a random version 4 UUID.
func New() UUID {
	var u UUID
	rand.Read(u[:]) // never fails on Linux
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// String formats u in the canonical lower-case 8-4-4-4-12 form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// Parse reads the 8-4-4-4-12 form, in either case.
func Parse(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	compact := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u[:], []byte(compact)); err != nil {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	return u, nil
}
