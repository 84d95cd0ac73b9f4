package luks2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// object is a JSON object that keeps its members in order and each value
// as the exact bytes it was read from. Changing one member re-encodes only
// that member, so everything else in a header, including members this
// package does not know, is written back as cryptsetup (or whoever) wrote it.
type object struct {
	members []member
}

type member struct {
	key   string
	value json.RawMessage
}

// parseObject splits a JSON object into its members. Duplicate keys are
// refused: which copy counts differs between parsers, and a header that
// means different things to different tools must not be trusted.
func parseObject(data []byte, path string) (*object, error) {
	if !json.Valid(data) {
		// Say whether the text is broken or has something after it.
		var v json.RawMessage
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&v); err != nil {
			return nil, invalid(path, "malformed JSON: %v", err)
		}
		return nil, invalid(path, "data after the JSON object")
	}
	s := scanner{data: data}
	s.skipSpace()
	if !s.consume('{') {
		return nil, invalid(path, "not a JSON object")
	}
	o := &object{}
	seen := make(map[string]bool)
	s.skipSpace()
	if s.consume('}') {
		return o, nil
	}
	for {
		s.skipSpace()
		rawKey := s.value()
		var key string
		if err := json.Unmarshal(rawKey, &key); err != nil {
			return nil, invalid(path, "malformed member name: %v", err)
		}
		if seen[key] {
			return nil, invalid(joinPath(path, key), "duplicate member")
		}
		seen[key] = true
		s.skipSpace()
		s.consume(':')
		s.skipSpace()
		val := s.value()
		o.members = append(o.members, member{key: key, value: bytes.Clone(val)})
		s.skipSpace()
		if s.consume('}') {
			return o, nil
		}
		s.consume(',')
	}
}

// maxJSONDepth is how deeply json-c, cryptsetup's JSON parser, lets
// values nest: the root is at depth 0, members and elements one deeper
// than their container, and json_tokener_new allows depths up to
// JSON_TOKENER_DEFAULT_DEPTH-1 (31). Deeper metadata makes cryptsetup
// refuse the header, so it is refused here too, on reading and on every
// change (a token, say).
const maxJSONDepth = 31

// jsonDepth returns the depth of the most deeply nested value of valid
// JSON text, counted as json-c counts it.
func jsonDepth(text []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	type container struct {
		object   bool
		wantName bool // next token is a member name: not a value, no depth
	}
	var open []container
	deepest := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest, nil
		}
		if err != nil {
			return 0, err
		}
		d, delim := tok.(json.Delim)
		if delim && (d == '}' || d == ']') {
			open = open[:len(open)-1]
			continue
		}
		if n := len(open); n > 0 {
			top := &open[n-1]
			if top.wantName {
				top.wantName = false
				continue
			}
			top.wantName = top.object
		}
		deepest = max(deepest, len(open))
		if delim {
			open = append(open, container{object: d == '{', wantName: d == '{'})
		}
	}
}

// scanner walks JSON text that json.Valid has accepted, so it only needs
// to find where values end, not to check them.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) consume(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// value returns the bytes of the value at the current position and moves
// past it.
func (s *scanner) value() []byte {
	start := s.pos
	depth := 0
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.skipString()
			if depth == 0 {
				return s.data[start:s.pos]
			}
			continue
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return s.data[start:s.pos]
			}
			depth--
			if depth == 0 {
				s.pos++
				return s.data[start:s.pos]
			}
		case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n'):
			return s.data[start:s.pos]
		}
		s.pos++
	}
	return s.data[start:s.pos]
}

func (s *scanner) skipString() {
	s.pos++ // opening quote
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case '\\':
			s.pos += 2
			continue
		case '"':
			s.pos++
			return
		}
		s.pos++
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// marshal writes the object compactly, values as stored.
func (o *object) marshal() json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o.members {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(encodeValue(m.key))
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// clone copies the member list; values are shared because they are never
// modified in place, only replaced.
func (o *object) clone() *object {
	return &object{members: append([]member(nil), o.members...)}
}

func (o *object) get(key string) (json.RawMessage, bool) {
	for _, m := range o.members {
		if m.key == key {
			return m.value, true
		}
	}
	return nil, false
}

// set replaces a member's value in place, or appends the member.
func (o *object) set(key string, value json.RawMessage) {
	for i, m := range o.members {
		if m.key == key {
			o.members[i].value = value
			return
		}
	}
	o.members = append(o.members, member{key: key, value: value})
}

func (o *object) del(key string) {
	for i, m := range o.members {
		if m.key == key {
			o.members = append(o.members[:i:i], o.members[i+1:]...)
			return
		}
	}
}

// encodeValue encodes a Go value as compact JSON without HTML escaping,
// as json-c writes it.
func encodeValue(v any) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only called with strings, numbers, string slices and raw JSON.
		panic(fmt.Sprintf("luks2: encoding %T: %v", v, err))
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// kind is the JSON type of a raw value, judged by its first byte (the
// value has already been checked to be well-formed).
func kind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch c := raw[0]; {
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == '"':
		return "string"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	default:
		return "number"
	}
}

// Typed accessors. Each names the full path in its error so that a
// validation failure reads like "segments.0.sector_size: missing".

func (o *object) need(path, key, want string) (json.RawMessage, error) {
	raw, ok := o.get(key)
	if !ok {
		return nil, invalid(joinPath(path, key), "missing")
	}
	if k := kind(raw); k != want {
		return nil, invalid(joinPath(path, key), "is a %s, want a %s", k, want)
	}
	return raw, nil
}

func (o *object) has(key string) bool {
	_, ok := o.get(key)
	return ok
}

// str reads a string member. Like cryptsetup's json_contains_string,
// which every string it checks goes through, it refuses an empty one.
func (o *object) str(path, key string) (string, error) {
	raw, err := o.need(path, key, "string")
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(joinPath(path, key), "%v", err)
	}
	if s == "" {
		return "", invalid(joinPath(path, key), "is an empty string")
	}
	return s, nil
}

func (o *object) obj(path, key string) (*object, error) {
	raw, err := o.need(path, key, "object")
	if err != nil {
		return nil, err
	}
	return parseObject(raw, joinPath(path, key))
}

// integer reads a JSON integer (json-c's int type: no fraction, no
// exponent) within [lo, hi].
func (o *object) integer(path, key string, lo, hi int64) (int64, error) {
	raw, err := o.need(path, key, "number")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, invalid(joinPath(path, key), "%s is not an integer", raw)
	}
	if v < lo || v > hi {
		return 0, invalid(joinPath(path, key), "%d is out of range [%d, %d]", v, lo, hi)
	}
	return v, nil
}

func (o *object) uint32(path, key string) (uint32, error) {
	v, err := o.integer(path, key, 0, math.MaxUint32)
	return uint32(v), err
}

// u64str reads a number that LUKS2 stores as a decimal string, because
// JSON numbers are not safe beyond 2^53 ("offset":"16777216").
func (o *object) u64str(path, key string) (uint64, error) {
	s, err := o.str(path, key)
	if err != nil {
		return 0, err
	}
	v, err := parseDecimal(s)
	if err != nil {
		return 0, invalid(joinPath(path, key), "%v", err)
	}
	return v, nil
}

// parseDecimal accepts what cryptsetup accepts for a 64-bit value: ASCII
// digits only, no sign, no blanks, within uint64.
func parseDecimal(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return v, nil
}

// strArray reads an array whose elements must all be strings.
func (o *object) strArray(path, key string) ([]string, error) {
	raw, err := o.need(path, key, "array")
	if err != nil {
		return nil, err
	}
	return parseStrArray(raw, joinPath(path, key))
}

func parseStrArray(raw json.RawMessage, path string) ([]string, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, invalid(path, "%v", err)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		if kind(it) != "string" {
			return nil, invalid(fmt.Sprintf("%s[%d]", path, i), "is a %s, want a string", kind(it))
		}
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return nil, invalid(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseID reads an object key that names a keyslot, token, segment or
// digest: canonical decimal (no leading zeros, so "1" and "01" cannot both
// name keyslot 1) below max.
func parseID(path, key string, max int) (int, error) {
	v, err := parseDecimal(key)
	if err != nil || (len(key) > 1 && key[0] == '0') {
		return 0, invalid(joinPath(path, key), "member name is not a number in canonical form")
	}
	if v >= uint64(max) {
		return 0, invalid(joinPath(path, key), "id must be below %d", max)
	}
	return int(v), nil
}

// idList converts a keyslots or segments array ("0","3") to ids.
func idList(path string, names []string, max int) ([]int, error) {
	ids := make([]int, 0, len(names))
	for i, n := range names {
		v, err := parseDecimal(n)
		if err != nil || (len(n) > 1 && n[0] == '0') || v >= uint64(max) {
			return nil, invalid(fmt.Sprintf("%s[%d]", path, i), "%q is not a valid id", n)
		}
		ids = append(ids, int(v))
	}
	return ids, nil
}

func idStrings(ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.Itoa(id)
	}
	return out
}
