package kmsserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// encryptDataKeyRequest is decoded here rather than in wire because only
// the server reads it: the client encodes it with wire.EncodeObject.
type encryptDataKeyRequest struct {
	KeyID                       string            `json:"key_id"`
	PlainText                   wire.SecretHex    `json:"plain_text"`
	DataKeyPlainLength          string            `json:"datakey_plain_length"`
	EncryptionContext           map[string]string `json:"encryption_context,omitempty"`
	AdditionalAuthenticatedData string            `json:"additional_authenticated_data,omitempty"`
	Sequence                    string            `json:"sequence,omitempty"`
	Pin                         string            `json:"pin,omitempty"`
	PinType                     string            `json:"pin_type,omitempty"`
	KeySpec                     string            `json:"key_spec,omitempty"`
}

// cipherTextHex writes a wrapped key as cipher_text: upper-case hex, as
// the service writes it. It is read back in either case.
func cipherTextHex(wrapped []byte) string { return strings.ToUpper(hex.EncodeToString(wrapped)) }

// unbound is the binding the backend gets for a request without
// additional_authenticated_data or encryption_context: such keys are valid
// API calls, bound to nothing. No request can name it, because it is not
// UTF-8 and every binding decoded from JSON is; so an unbound key unwraps
// only without a binding, and a bound key never unwraps as unbound.
const unbound = "\xffunbound"

// checkKeyID answers KMS.0204 or KMS.0205 unless keyID is a key id, as
// the service does: aliases are resolved by the caller, never here.
func checkKeyID(w http.ResponseWriter, rec *record, keyID string) (int, bool) {
	if keyID == "" {
		return fail(w, rec, http.StatusBadRequest, wire.CodeMissingParameter, "key_id is missing"), false
	}
	if !wire.ValidKeyID(keyID) {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadKeyID, "key_id is not a key id (36 characters such as 0d0466b0-e727-4d9c-b35d-f84bb474a37f); aliases are not accepted"), false
	}
	return 0, true
}

// checkSequence answers KMS.0206 for a sequence that is not 36 bytes.
// The sequence only labels the request; it changes nothing.
func checkSequence(w http.ResponseWriter, rec *record, seq string) (int, bool) {
	if seq != "" && len(seq) != wire.SequenceLength {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadSequence, "sequence must be 36 bytes"), false
	}
	return 0, true
}

// checkPin refuses PIN protection, which the service offers only for
// level-4 (dedicated HSM) key stores; a pin_type alone is checked and
// ignored.
func checkPin(w http.ResponseWriter, rec *record, pin, pinType string) (int, bool) {
	if pinType != "" && pinType != wire.PinTypeCipherText && pinType != wire.PinTypePlainText {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadParameter, "pin_type must be CipherText or PlainText"), false
	}
	if pin != "" {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadParameter, "pin is supported only for keys in a dedicated key store, which this KMS does not have"), false
	}
	return 0, true
}

// decodeRequest decodes body strictly: unknown members, trailing data and
// wrong types are 400 KMS.0202, naming the member when json says which.
func decodeRequest(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return fmt.Errorf("member %s has the wrong type, want a JSON %s", te.Field, te.Type)
		case errors.Is(err, wire.ErrNotHexString), errors.Is(err, wire.ErrBadHex):
			return errors.New("plain_text is not a hex string")
		default:
			// Decoder messages quote at most a member name, never values.
			return fmt.Errorf("request body is not a valid request: %v", err)
		}
	}
	if dec.More() {
		return errors.New("request body has data after the JSON object")
	}
	return nil
}

// bindingOf reads the binding from additional_authenticated_data or
// encryption_context; see the package comment.
func bindingOf(aad string, ctxMap map[string]string) (string, error) {
	if aad != "" && ctxMap != nil {
		return "", errors.New("send additional_authenticated_data or encryption_context, not both")
	}
	if len(aad) > wire.MaxAdditionalAuthenticatedData {
		return "", fmt.Errorf("additional_authenticated_data is longer than %d bytes", wire.MaxAdditionalAuthenticatedData)
	}
	if ctxMap == nil {
		if aad == "" {
			return unbound, nil
		}
		return aad, nil
	}
	if b, ok := ctxMap[wire.ContextBinding]; ok && len(ctxMap) == 1 {
		return b, nil
	}
	canon, err := json.Marshal(ctxMap) // map keys are sorted: canonical
	if err != nil {
		return "", fmt.Errorf("encryption_context: %v", err)
	}
	if len(canon) > wire.MaxEncryptionContext {
		return "", fmt.Errorf("encryption_context is longer than %d bytes", wire.MaxEncryptionContext)
	}
	return string(canon), nil
}

func (s *server) createDataKey(withPlaintext bool) opFunc {
	return func(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int {
		var req wire.CreateDataKeyRequest
		if err := decodeRequest(body, &req); err != nil {
			return fail(w, rec, http.StatusBadRequest, wire.CodeBadJSON, err.Error())
		}
		rec.keyID = req.KeyID
		if status, ok := checkKeyID(w, rec, req.KeyID); !ok {
			return status
		}
		if status, ok := checkSequence(w, rec, req.Sequence); !ok {
			return status
		}
		if status, ok := checkPin(w, rec, req.Pin, req.PinType); !ok {
			return status
		}
		bits := 256
		if req.KeySpec != "" {
			n, ok := wire.DataKeySpecs[req.KeySpec]
			switch {
			case !ok:
				return fail(w, rec, http.StatusBadRequest, wire.CodeBadParameter, "key_spec must be one of AES_256, AES_128, SM4, HMAC_256, HMAC_384, HMAC_512, HMAC_SM3")
			case req.DataKeyLength == "" && (req.KeySpec == "SM4" || req.KeySpec == "HMAC_SM3"):
				return fail(w, rec, http.StatusBadRequest, wire.CodeBadParameter, "key_spec "+req.KeySpec+" needs an SM4 master key; this KMS has AES-256 master keys only")
			}
			bits = n
		}
		if req.DataKeyLength != "" {
			// datakey_length wins over key_spec, as the service documents.
			n, ok := wire.ParseDecimal(req.DataKeyLength, 8, wire.MaxDataKeyBytes*8)
			if !ok || n%8 != 0 {
				return fail(w, rec, http.StatusBadRequest, wire.CodeBadDataKeyLength, "datakey_length must be a multiple of 8 bits from 8 to 8192")
			}
			bits = n
		}
		binding, err := bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext)
		if err != nil {
			return fail(w, rec, http.StatusBadRequest, wire.CodeBadContext, err.Error())
		}
		dk, err := s.store.GenerateDataKey(ctx, req.KeyID, bits/8, binding)
		if err != nil {
			return backendFail(w, rec, err)
		}
		defer dk.Plaintext.Wipe()
		members := []wire.Member{{Name: "key_id", String: dk.KeyID}}
		if withPlaintext {
			members = append(members, wire.Member{Name: "plain_text", Hex: [][]byte{dk.Plaintext.Bytes()}})
		}
		members = append(members, wire.Member{Name: "cipher_text", String: cipherTextHex(dk.Wrapped)})
		return writeSecretJSON(w, rec, members)
	}
}

func (s *server) encryptDataKey(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int {
	var req encryptDataKeyRequest
	err := decodeRequest(body, &req)
	defer req.PlainText.Wipe()
	if err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadJSON, err.Error())
	}
	rec.keyID = req.KeyID
	if req.KeyID == "" || req.PlainText == nil || req.DataKeyPlainLength == "" {
		return fail(w, rec, http.StatusBadRequest, wire.CodeMissingParameter, "key_id, plain_text and datakey_plain_length are required")
	}
	if status, ok := checkKeyID(w, rec, req.KeyID); !ok {
		return status
	}
	if status, ok := checkSequence(w, rec, req.Sequence); !ok {
		return status
	}
	if status, ok := checkPin(w, rec, req.Pin, req.PinType); !ok {
		return status
	}
	if req.KeySpec != "" {
		// SM2 and RSA data keys belong to level-4 key stores.
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadParameter, "key_spec is supported only for keys in a dedicated key store, which this KMS does not have")
	}
	n, ok := wire.ParseDecimal(req.DataKeyPlainLength, 1, wire.MaxDataKeyBytes)
	if !ok {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadPlainLength, "datakey_plain_length must be 1 to 1024 bytes")
	}
	if len(req.PlainText) != n+sha256.Size {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadPlainText, "plain_text must be the data key followed by its SHA-256, as hex")
	}
	key, digest := req.PlainText[:n], req.PlainText[n:]
	sum := sha256.Sum256(key)
	if subtle.ConstantTimeCompare(sum[:], digest) != 1 {
		return fail(w, rec, http.StatusBadRequest, wire.CodeEncryptDigest, "the SHA-256 in plain_text does not match the data key")
	}
	binding, err := bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext)
	if err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadContext, err.Error())
	}
	pt, err := secret.New(n)
	if err != nil {
		return fail(w, rec, http.StatusInternalServerError, wire.CodeInternal, "allocating key memory failed")
	}
	defer pt.Wipe()
	copy(pt.Bytes(), key)
	wrapped, err := s.store.Encrypt(ctx, req.KeyID, pt, binding)
	if err != nil {
		return backendFail(w, rec, err)
	}
	return writeJSON(w, rec, http.StatusOK, wire.EncryptDataKeyResponse{
		KeyID:         req.KeyID,
		CipherText:    cipherTextHex(wrapped),
		DataKeyLength: strconv.Itoa(n),
	})
}

func (s *server) decryptDataKey(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int {
	var req wire.DecryptDataKeyRequest
	if err := decodeRequest(body, &req); err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadJSON, err.Error())
	}
	rec.keyID = req.KeyID
	if req.KeyID == "" || req.CipherText == "" || req.DataKeyCipherLength == "" {
		return fail(w, rec, http.StatusBadRequest, wire.CodeMissingParameter, "key_id, cipher_text and datakey_cipher_length are required")
	}
	if status, ok := checkKeyID(w, rec, req.KeyID); !ok {
		return status
	}
	if status, ok := checkSequence(w, rec, req.Sequence); !ok {
		return status
	}
	n, ok := wire.ParseDecimal(req.DataKeyCipherLength, 1, wire.MaxDataKeyBytes)
	if !ok {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadCipherLength, "datakey_cipher_length must be 1 to 1024 bytes")
	}
	wrapped, err := hex.DecodeString(req.CipherText)
	if err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadCipherText, "cipher_text is not hex")
	}
	binding, err := bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext)
	if err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadContext, err.Error())
	}
	key, err := s.store.Decrypt(ctx, req.KeyID, wrapped, binding)
	if err != nil {
		return backendFail(w, rec, err)
	}
	defer key.Wipe()
	if key.Len() != n {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadCipherLength, "datakey_cipher_length does not match the wrapped key")
	}
	digest := sha256.Sum256(key.Bytes())
	return writeSecretJSON(w, rec, []wire.Member{
		{Name: "data_key", Hex: [][]byte{key.Bytes()}},
		{Name: "datakey_length", String: strconv.Itoa(n)},
		{Name: "datakey_dgst", String: hex.EncodeToString(digest[:])},
	})
}

func (s *server) describeKey(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int {
	var req wire.DescribeKeyRequest
	if err := decodeRequest(body, &req); err != nil {
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadJSON, err.Error())
	}
	rec.keyID = req.KeyID
	if status, ok := checkKeyID(w, rec, req.KeyID); !ok {
		return status
	}
	if status, ok := checkSequence(w, rec, req.Sequence); !ok {
		return status
	}
	info, err := s.store.DescribeKey(ctx, req.KeyID)
	if err != nil {
		return backendFail(w, rec, err)
	}
	return writeJSON(w, rec, http.StatusOK, wire.DescribeKeyResponse{KeyInfo: keyInfo(info)})
}

var wireStates = map[kmsclient.KeyState]string{
	kmsclient.KeyEnabled:         wire.KeyStateEnabled,
	kmsclient.KeyDisabled:        wire.KeyStateDisabled,
	kmsclient.KeyPendingDeletion: wire.KeyStatePendingDeletion,
	kmsclient.KeyPendingImport:   wire.KeyStatePendingImport,
}

func keyInfo(k *kmsclient.KeyInfo) wire.KeyInfo {
	state, ok := wireStates[k.State]
	if !ok {
		state = wire.KeyStatePendingActivation
	}
	out := wire.KeyInfo{
		KeyID:          k.ID,
		KeyAlias:       k.Alias,
		KeyDescription: k.Description,
		KeyState:       state,
		KeySpec:        "AES_256",
		KeyUsage:       "ENCRYPT_DECRYPT",
		KeyType:        "1",
		Origin:         "kms",
		DefaultKeyFlag: "0",
	}
	if !k.CreatedAt.IsZero() {
		out.CreationDate = strconv.FormatInt(k.CreatedAt.UnixMilli(), 10)
	}
	if !k.DeletionDate.IsZero() {
		out.ScheduledDeletionDate = strconv.FormatInt(k.DeletionDate.UnixMilli(), 10)
	}
	return out
}

// backendErrors maps the backend's typed errors to what Huawei KMS
// answers for the same condition.
var backendErrors = []struct {
	kind   error
	status int
	code   string
}{
	{kmsclient.ErrKeyNotFound, http.StatusNotFound, wire.CodeKeyNotFound},
	{kmsclient.ErrKeyDisabled, http.StatusBadRequest, wire.CodeKeyDisabled},
	{kmsclient.ErrKeyPendingDeletion, http.StatusBadRequest, wire.CodeKeyPendingDeletion},
	{kmsclient.ErrInvalidCiphertext, http.StatusBadRequest, wire.CodeBadCipherText},
	{kmsclient.ErrAccessDenied, http.StatusForbidden, wire.CodeNoKeyPermission},
	{kmsclient.ErrThrottled, http.StatusTooManyRequests, wire.CodeGatewayThrottled},
	{kmsclient.ErrInvalidRequest, http.StatusBadRequest, wire.CodeBadParameter},
}

func backendFail(w http.ResponseWriter, rec *record, err error) int {
	msg := err.Error()
	var ke *kmsclient.Error
	if errors.As(err, &ke) && ke.Message != "" {
		msg = ke.Message
	}
	if errors.Is(err, kmsclient.ErrKeyNotFound) {
		// The store's message names its directory; a remote client
		// needs only the fact.
		msg = "the key does not exist"
	}
	for _, e := range backendErrors {
		if errors.Is(err, e.kind) {
			return fail(w, rec, e.status, e.code, msg)
		}
	}
	return fail(w, rec, http.StatusInternalServerError, wire.CodeInternal, "KMS error: "+msg)
}

// fail writes a KMS error body and records it for the log line.
func fail(w http.ResponseWriter, rec *record, status int, code, msg string) int {
	rec.code, rec.msg = code, msg
	return writeJSON(w, rec, status, wire.ErrorBody{Error: wire.ErrorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, rec *record, status int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		rec.code, rec.msg = wire.CodeInternal, "encode response: "+err.Error()
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"error_code":"` + wire.CodeInternal + `","error_msg":"encode response failed"}}`)
	}
	return write(w, status, b)
}

// writeSecretJSON writes a response carrying key material from a buffer
// it zeroes once written.
func writeSecretJSON(w http.ResponseWriter, rec *record, members []wire.Member) int {
	b, err := wire.EncodeObject(members...)
	if err != nil {
		return fail(w, rec, http.StatusInternalServerError, wire.CodeInternal, "encode response failed")
	}
	defer secret.Zero(b)
	return write(w, http.StatusOK, b)
}

func write(w http.ResponseWriter, status int, b []byte) int {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
	return status
}
