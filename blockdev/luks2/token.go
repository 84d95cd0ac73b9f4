package luks2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// Tokens returns every token as the raw JSON stored in the header, keyed
// by token id. Token types this package does not know are kept as they
// are; the map and its values are copies.
func (h *Header) Tokens() map[int]json.RawMessage {
	out := make(map[int]json.RawMessage, len(h.meta.tokens))
	for id, t := range h.meta.tokens {
		out[id] = slices.Clone(t.raw)
	}
	return out
}

// Token returns one token's raw JSON.
func (h *Header) Token(id int) (json.RawMessage, error) {
	t, ok := h.meta.tokens[id]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoSuchToken, id)
	}
	return slices.Clone(t.raw), nil
}

// SetToken adds or replaces token id (0-31). raw must be a JSON object
// with a "type" string and a "keyslots" array naming existing keyslots
// ("keyslots":["0"]), as cryptsetup requires; everything else in it is the
// token type's business and is kept. raw is stored compacted. Write
// commits the change.
func (h *Header) SetToken(id int, raw json.RawMessage) error {
	if err := h.checkWritable(); err != nil {
		return err
	}
	if id < 0 || id >= MaxTokens {
		return fmt.Errorf("luks2: token id %d outside [0, %d)", id, MaxTokens)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return fmt.Errorf("luks2: token %d: %w", id, err)
	}
	tokens, err := h.meta.section("tokens")
	if err != nil {
		return err
	}
	tokens.set(strconv.Itoa(id), buf.Bytes())
	sortMembers(tokens)
	root := h.meta.root.clone()
	root.set("tokens", tokens.marshal())
	if err := h.replace(root); err != nil {
		return fmt.Errorf("luks2: token %d: %w", id, err)
	}
	return nil
}

// AddToken stores raw under the lowest free token id and returns it.
func (h *Header) AddToken(raw json.RawMessage) (int, error) {
	for id := 0; id < MaxTokens; id++ {
		if _, used := h.meta.tokens[id]; !used {
			return id, h.SetToken(id, raw)
		}
	}
	return -1, fmt.Errorf("%w: all %d token ids are in use", ErrNoSpace, MaxTokens)
}

// RemoveToken deletes token id. Write commits the change.
func (h *Header) RemoveToken(id int) error {
	if err := h.checkWritable(); err != nil {
		return err
	}
	if _, ok := h.meta.tokens[id]; !ok {
		return fmt.Errorf("%w: %d", ErrNoSuchToken, id)
	}
	tokens, err := h.meta.section("tokens")
	if err != nil {
		return err
	}
	tokens.del(strconv.Itoa(id))
	root := h.meta.root.clone()
	root.set("tokens", tokens.marshal())
	return h.replace(root)
}

// TokenIDs lists the token ids in use, in order.
func (h *Header) TokenIDs() []int {
	return slices.Sorted(maps.Keys(h.meta.tokens))
}
