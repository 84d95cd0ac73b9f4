package huaweicloud

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// Framing of wrapped keys; see the package comment. Version 1 held the
// cipher_text decoded from hex; it is still read, and sent back as
// lower-case hex.
const (
	frameV1     = 1
	frameV2     = 2
	frameHeader = 3
	// maxCipherText bounds cipher_text: a 1024-byte key wrapped with its
	// metadata is well under 4 KiB of hex.
	maxCipherText = 16 << 10
)

// frame wraps cipher_text exactly as the service returned it, case
// included: the service reads its own form back, and nothing says it
// reads any other.
func frame(keyLen int, cipherText string) []byte {
	out := make([]byte, frameHeader, frameHeader+len(cipherText))
	out[0] = frameV2
	binary.BigEndian.PutUint16(out[1:], uint16(keyLen))
	return append(out, cipherText...)
}

func unframe(wrapped []byte) (keyLen int, cipherText string, ok bool) {
	if len(wrapped) <= frameHeader {
		return 0, "", false
	}
	keyLen = int(binary.BigEndian.Uint16(wrapped[1:]))
	if keyLen < 1 || keyLen > wire.MaxDataKeyBytes {
		return 0, "", false
	}
	rest := wrapped[frameHeader:]
	switch wrapped[0] {
	case frameV1:
		return keyLen, hex.EncodeToString(rest), true
	case frameV2:
		if !validCipherText(string(rest)) {
			return 0, "", false
		}
		return keyLen, string(rest), true
	}
	return 0, "", false
}

// validCipherText reports whether s is a cipher_text as the service
// writes it: hex digits of either case, a whole number of bytes.
func validCipherText(s string) bool {
	if s == "" || len(s)%2 != 0 || len(s) > maxCipherText {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// ErrNotKeyID is the cause of the error for a key id the service would
// refuse (KMS.0205): it takes key ids only, so aliases are resolved to
// ids before they reach this client.
var ErrNotKeyID = errors.New("not a key id: Huawei Cloud KMS takes key ids (36 characters such as 0d0466b0-e727-4d9c-b35d-f84bb474a37f), not aliases")

// checkKeyID refuses, before any request, a key id the service refuses.
func (c *Client) checkKeyID(op, keyID string) error {
	if wire.ValidKeyID(keyID) {
		return nil
	}
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrInvalidRequest, Err: ErrNotKeyID}
}

// binding returns the request members that carry the binding. Every
// wrapped key is bound to its volume, so an empty binding is refused here
// rather than sent as an unbound request.
func (c *Client) binding(op, keyID, binding string) (aad string, ctxMap map[string]string, err error) {
	if binding == "" {
		return "", nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "empty binding: every wrapped key must be bound to a volume")
	}
	if c.cfg.AADField == AADFieldContext {
		ctxMap = map[string]string{wire.ContextBinding: binding}
		if raw, err := json.Marshal(ctxMap); err != nil || len(raw) > wire.MaxEncryptionContext {
			return "", nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "binding is %d bytes, too long for an encryption_context of at most %d", len(binding), wire.MaxEncryptionContext)
		}
		return "", ctxMap, nil
	}
	if len(binding) > wire.MaxAdditionalAuthenticatedData {
		return "", nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "binding is %d bytes, KMS takes at most %d", len(binding), wire.MaxAdditionalAuthenticatedData)
	}
	return binding, nil, nil
}

func checkSize(n int) bool { return n >= 1 && n <= wire.MaxDataKeyBytes }

// GenerateDataKey calls create-datakey.
func (c *Client) GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error) {
	const op = "generate-data-key"
	if err := c.checkKeyID(op, keyID); err != nil {
		return nil, err
	}
	if !checkSize(size) {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "data key size %d bytes, want 1 to %d", size, wire.MaxDataKeyBytes)
	}
	aad, ctxMap, err := c.binding(op, keyID, binding)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(wire.CreateDataKeyRequest{
		KeyID:                       keyID,
		DataKeyLength:               strconv.Itoa(size * 8),
		EncryptionContext:           ctxMap,
		AdditionalAuthenticatedData: aad,
	})
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
	}
	resp, reqID, err := c.call(ctx, op, keyID, wire.OpCreateDataKey, body, false)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.CreateDataKeyResponse
	err = json.Unmarshal(resp, &out)
	defer out.PlainText.Wipe()
	if err != nil {
		return nil, c.badResponse(op, keyID, reqID, "create-datakey: %v", err)
	}
	if len(out.PlainText) != size {
		return nil, c.badResponse(op, keyID, reqID, "create-datakey returned a %d-byte key, asked for %d", len(out.PlainText), size)
	}
	if !validCipherText(out.CipherText) {
		return nil, c.badResponse(op, keyID, reqID, "create-datakey cipher_text is not hex")
	}
	pt, err := secret.FromBytes(out.PlainText)
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrUnavailable, "store data key: %v", err)
	}
	id := out.KeyID
	if id == "" {
		id = keyID
	}
	return &kmsclient.DataKey{Plaintext: pt, Wrapped: frame(size, out.CipherText), KeyID: id}, nil
}

// Encrypt calls encrypt-datakey, which takes the key followed by its
// SHA-256 so KMS can tell a damaged request from a real key.
func (c *Client) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	return c.encrypt(ctx, "encrypt", keyID, plaintext, binding)
}

func (c *Client) encrypt(ctx context.Context, op, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	if err := c.checkKeyID(op, keyID); err != nil {
		return nil, err
	}
	n := plaintext.Len()
	if !checkSize(n) {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "key size %d bytes, want 1 to %d", n, wire.MaxDataKeyBytes)
	}
	aad, ctxMap, err := c.binding(op, keyID, binding)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(plaintext.Bytes())
	members := []wire.Member{
		{Name: "key_id", String: keyID},
		{Name: "plain_text", Hex: [][]byte{plaintext.Bytes(), digest[:]}},
		{Name: "datakey_plain_length", String: strconv.Itoa(n)},
	}
	if ctxMap != nil {
		raw, err := json.Marshal(ctxMap)
		if err != nil {
			return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
		}
		members = append(members, wire.Member{Name: "encryption_context", JSON: raw})
	} else {
		members = append(members, wire.Member{Name: "additional_authenticated_data", String: aad})
	}
	body, err := wire.EncodeObject(members...)
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
	}
	resp, reqID, err := c.call(ctx, op, keyID, wire.OpEncryptDataKey, body, true)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.EncryptDataKeyResponse
	if err := json.Unmarshal(resp, &out); err != nil {
		return nil, c.badResponse(op, keyID, reqID, "encrypt-datakey: %v", err)
	}
	if out.DataKeyLength != "" && out.DataKeyLength != strconv.Itoa(n) {
		return nil, c.badResponse(op, keyID, reqID, "encrypt-datakey reports a %q-byte key, sent %d", redactHex(out.DataKeyLength), n)
	}
	if !validCipherText(out.CipherText) {
		return nil, c.badResponse(op, keyID, reqID, "encrypt-datakey cipher_text is not hex")
	}
	return frame(n, out.CipherText), nil
}

// Decrypt calls decrypt-datakey and checks the returned key against the
// digest KMS sends with it.
func (c *Client) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	return c.decrypt(ctx, "decrypt", keyID, wrapped, binding)
}

func (c *Client) decrypt(ctx context.Context, op, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	if err := c.checkKeyID(op, keyID); err != nil {
		return nil, err
	}
	n, cipherText, ok := unframe(wrapped)
	if !ok {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidCiphertext, "not a huaweicloud wrapped key (bad framing)")
	}
	aad, ctxMap, err := c.binding(op, keyID, binding)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(wire.DecryptDataKeyRequest{
		KeyID:                       keyID,
		CipherText:                  cipherText,
		DataKeyCipherLength:         strconv.Itoa(n),
		EncryptionContext:           ctxMap,
		AdditionalAuthenticatedData: aad,
	})
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
	}
	resp, reqID, err := c.call(ctx, op, keyID, wire.OpDecryptDataKey, body, false)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.DecryptDataKeyResponse
	err = json.Unmarshal(resp, &out)
	defer out.DataKey.Wipe()
	if err != nil {
		return nil, c.badResponse(op, keyID, reqID, "decrypt-datakey: %v", err)
	}
	if len(out.DataKey) != n || (out.DataKeyLength != "" && out.DataKeyLength != strconv.Itoa(n)) {
		return nil, &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrInvalidCiphertext, RequestID: reqID,
			Message: fmt.Sprintf("decrypt-datakey returned a %d-byte key, the wrapped key says %d", len(out.DataKey), n)}
	}
	want, err := hex.DecodeString(out.DataKeyDigest)
	got := sha256.Sum256(out.DataKey)
	if err != nil || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return nil, &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrInvalidCiphertext, RequestID: reqID,
			Message: "datakey_dgst does not match the returned key"}
	}
	key, err := secret.FromBytes(out.DataKey)
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrUnavailable, "store data key: %v", err)
	}
	return key, nil
}

// ReEncrypt decrypts and encrypts again: Huawei KMS has no server-side
// re-encryption of data keys. The plaintext exists here only in locked
// memory, between the two calls.
func (c *Client) ReEncrypt(ctx context.Context, srcKeyID string, wrapped []byte, dstKeyID string, binding string) ([]byte, error) {
	const op = "re-encrypt"
	if err := c.checkKeyID(op, dstKeyID); err != nil {
		return nil, err
	}
	pt, err := c.decrypt(ctx, op, srcKeyID, wrapped, binding)
	if err != nil {
		return nil, err
	}
	defer pt.Wipe()
	return c.encrypt(ctx, op, dstKeyID, pt, binding)
}
