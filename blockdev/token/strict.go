package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// checkDuplicates walks the JSON text and fails on an object that names
// a member twice. encoding/json would silently keep the last one, and
// cryptsetup's json-c the first (or last, by version): two readers must
// never see two different tokens in the same bytes.
func checkDuplicates(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // next string in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.expect
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.object {
					top.expect = true
				}
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
			case '[':
				if top != nil && top.object {
					top.expect = true
				}
				stack = append(stack, &frame{})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if isKey {
				if top.keys[v] {
					return fmt.Errorf("member %q appears twice", v)
				}
				top.keys[v] = true
				top.expect = false
				continue
			}
		}
		if top != nil && top.object {
			top.expect = true
		}
	}
}

// checkRequired fails unless every member that v's struct type names
// (through its json tags, recursively for nested structs) is present
// and not null: a missing member must not read as a zero value.
func checkRequired(raw []byte, v any) error {
	return requireMembers(raw, reflect.TypeOf(v).Elem(), "")
}

func requireMembers(raw []byte, t reflect.Type, path string) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		if path == "" {
			return fmt.Errorf("%w: not a JSON object", ErrInvalid)
		}
		return fmt.Errorf("%w: %s is not a JSON object", ErrInvalid, strings.TrimSuffix(path, "."))
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		val, ok := members[name]
		if !ok || bytes.Equal(bytes.TrimSpace(val), []byte("null")) {
			return fmt.Errorf("%w: %s%s is missing", ErrInvalid, path, name)
		}
		if f.Type.Kind() == reflect.Struct {
			if err := requireMembers(val, f.Type, path+name+"."); err != nil {
				return err
			}
		}
	}
	return nil
}
