package wire

import (
	"encoding/hex"
	"encoding/json"
	"errors"

	"kmsagent/agent/secret"
)

// SecretHex is key material that travels as a JSON hex string.
// encoding/json hands UnmarshalJSON a slice of the caller's input buffer,
// so decoding goes straight from that buffer into the byte slice without a
// string copy. The owner zeroes it, typically by passing it to
// secret.FromBytes.
type SecretHex []byte

// Errors of SecretHex.UnmarshalJSON; they never quote the input.
var (
	ErrNotHexString = errors.New("want a hex string")
	ErrBadHex       = errors.New("invalid hex")
	errMarshal      = errors.New("wire: refusing to marshal key material; use EncodeObject")
)

// UnmarshalJSON decodes a hex string. JSON escapes are refused: hex needs
// none, and allowing them would force a copy.
func (s *SecretHex) UnmarshalJSON(data []byte) error {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return ErrNotHexString
	}
	in := data[1 : len(data)-1]
	if len(in)%2 != 0 {
		return ErrBadHex
	}
	out := make([]byte, len(in)/2)
	if _, err := hex.Decode(out, in); err != nil {
		// The error would quote an input byte; keep it out.
		secret.Zero(out)
		return ErrBadHex
	}
	secret.Zero(*s)
	*s = out
	return nil
}

// MarshalJSON refuses, so key material is only ever encoded by
// EncodeObject into a buffer its owner zeroes.
func (s SecretHex) MarshalJSON() ([]byte, error) { return nil, errMarshal }

// Wipe zeroes the key material.
func (s SecretHex) Wipe() { secret.Zero(s) }

// Member is one name/value pair of an object built by EncodeObject. Exactly
// one of String, JSON or Hex is used: Hex when non-nil, else JSON when
// non-nil, else String.
type Member struct {
	Name   string
	String string   // a plain string value
	JSON   []byte   // an already encoded JSON value (objects)
	Hex    [][]byte // key material, concatenated and written as one hex string
}

// EncodeObject encodes members as a JSON object into a buffer allocated
// once at its final size, so the returned slice is the only copy of any
// hex key material. The caller zeroes it after use.
func EncodeObject(members ...Member) ([]byte, error) {
	encoded := make([][2][]byte, len(members)) // name, non-secret value
	size := 2                                  // braces
	for i, m := range members {
		name, err := json.Marshal(m.Name)
		if err != nil {
			return nil, err
		}
		encoded[i][0] = name
		size += len(name) + 1 // colon
		if i > 0 {
			size++ // comma
		}
		switch {
		case m.Hex != nil:
			size += 2 // quotes
			for _, part := range m.Hex {
				size += hex.EncodedLen(len(part))
			}
		case m.JSON != nil:
			if !json.Valid(m.JSON) {
				return nil, errors.New("wire: member " + m.Name + " is not valid JSON")
			}
			encoded[i][1] = m.JSON
			size += len(m.JSON)
		default:
			v, err := json.Marshal(m.String)
			if err != nil {
				return nil, err
			}
			encoded[i][1] = v
			size += len(v)
		}
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, m := range members {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, encoded[i][0]...)
		out = append(out, ':')
		if m.Hex == nil {
			out = append(out, encoded[i][1]...)
			continue
		}
		out = append(out, '"')
		for _, part := range m.Hex {
			n := len(out)
			out = out[:n+hex.EncodedLen(len(part))]
			hex.Encode(out[n:], part)
		}
		out = append(out, '"')
	}
	out = append(out, '}')
	if len(out) != size || cap(out) != size {
		// A miscount would have reallocated and left a copy behind.
		secret.Zero(out[:cap(out)])
		return nil, errors.New("wire: object size miscounted")
	}
	return out, nil
}
