package huaweicloud

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/secret"
)

// Framing of wrapped keys; see the package comment.
const (
	frameVersion = 1
	frameHeader  = 3
)

func frame(keyLen int, cipherText []byte) []byte {
	out := make([]byte, frameHeader, frameHeader+len(cipherText))
	out[0] = frameVersion
	binary.BigEndian.PutUint16(out[1:], uint16(keyLen))
	return append(out, cipherText...)
}

func unframe(wrapped []byte) (keyLen int, cipherText []byte, ok bool) {
	if len(wrapped) <= frameHeader || wrapped[0] != frameVersion {
		return 0, nil, false
	}
	keyLen = int(binary.BigEndian.Uint16(wrapped[1:]))
	if keyLen < 1 || keyLen > wire.MaxDataKeyBytes {
		return 0, nil, false
	}
	return keyLen, wrapped[frameHeader:], true
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
	resp, err := c.call(ctx, op, keyID, wire.OpCreateDataKey, body, false)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.CreateDataKeyResponse
	err = json.Unmarshal(resp, &out)
	defer out.PlainText.Wipe()
	if err != nil {
		return nil, c.badResponse(op, keyID, "create-datakey: %v", err)
	}
	if len(out.PlainText) != size {
		return nil, c.badResponse(op, keyID, "create-datakey returned a %d-byte key, asked for %d", len(out.PlainText), size)
	}
	cipherText, err := hex.DecodeString(out.CipherText)
	if err != nil || len(cipherText) == 0 {
		return nil, c.badResponse(op, keyID, "create-datakey cipher_text is not hex")
	}
	pt, err := secret.FromBytes(out.PlainText)
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrUnavailable, "store data key: %v", err)
	}
	id := out.KeyID
	if id == "" {
		id = keyID
	}
	return &kmsclient.DataKey{Plaintext: pt, Wrapped: frame(size, cipherText), KeyID: id}, nil
}

// Encrypt calls encrypt-datakey, which takes the key followed by its
// SHA-256 so KMS can tell a damaged request from a real key.
func (c *Client) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	return c.encrypt(ctx, "encrypt", keyID, plaintext, binding)
}

func (c *Client) encrypt(ctx context.Context, op, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
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
	resp, err := c.call(ctx, op, keyID, wire.OpEncryptDataKey, body, true)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.EncryptDataKeyResponse
	if err := json.Unmarshal(resp, &out); err != nil {
		return nil, c.badResponse(op, keyID, "encrypt-datakey: %v", err)
	}
	if out.DataKeyLength != "" && out.DataKeyLength != strconv.Itoa(n) {
		return nil, c.badResponse(op, keyID, "encrypt-datakey reports a %s-byte key, sent %d", out.DataKeyLength, n)
	}
	cipherText, err := hex.DecodeString(out.CipherText)
	if err != nil || len(cipherText) == 0 {
		return nil, c.badResponse(op, keyID, "encrypt-datakey cipher_text is not hex")
	}
	return frame(n, cipherText), nil
}

// Decrypt calls decrypt-datakey and checks the returned key against the
// digest KMS sends with it.
func (c *Client) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	return c.decrypt(ctx, "decrypt", keyID, wrapped, binding)
}

func (c *Client) decrypt(ctx context.Context, op, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
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
		CipherText:                  hex.EncodeToString(cipherText),
		DataKeyCipherLength:         strconv.Itoa(n),
		EncryptionContext:           ctxMap,
		AdditionalAuthenticatedData: aad,
	})
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
	}
	resp, err := c.call(ctx, op, keyID, wire.OpDecryptDataKey, body, false)
	if err != nil {
		return nil, err
	}
	defer secret.Zero(resp)
	var out wire.DecryptDataKeyResponse
	err = json.Unmarshal(resp, &out)
	defer out.DataKey.Wipe()
	if err != nil {
		return nil, c.badResponse(op, keyID, "decrypt-datakey: %v", err)
	}
	if len(out.DataKey) != n || (out.DataKeyLength != "" && out.DataKeyLength != strconv.Itoa(n)) {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidCiphertext, "decrypt-datakey returned a %d-byte key, the wrapped key says %d", len(out.DataKey), n)
	}
	want, err := hex.DecodeString(out.DataKeyDigest)
	got := sha256.Sum256(out.DataKey)
	if err != nil || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidCiphertext, "datakey_dgst does not match the returned key")
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
	pt, err := c.decrypt(ctx, op, srcKeyID, wrapped, binding)
	if err != nil {
		return nil, err
	}
	defer pt.Wipe()
	return c.encrypt(ctx, op, dstKeyID, pt, binding)
}
