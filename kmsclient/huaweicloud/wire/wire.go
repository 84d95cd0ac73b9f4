// Package wire is the Huawei Cloud KMS v1.0 wire format that the
// huaweicloud client and kmsserver share: operation paths, JSON shapes,
// key states and error codes.
//
// Numbers travel as JSON strings ("datakey_length":"256") and key material
// as hex strings. Key material is decoded with SecretHex and encoded with
// EncodeObject, so it never passes through a Go string.
package wire

import (
	"net/url"
	"strconv"
)

// Operations, the last element of POST /v1.0/{project_id}/kms/{op}.
const (
	OpCreateDataKey                = "create-datakey"
	OpCreateDataKeyNoPlaintext     = "create-datakey-without-plaintext"
	OpEncryptDataKey               = "encrypt-datakey"
	OpDecryptDataKey               = "decrypt-datakey"
	OpDescribeKey                  = "describe-key"
	HeaderProjectID                = "X-Project-Id"
	HeaderRequestID                = "X-Request-Id"                   // set by the service on every answer
	ContentType                    = "application/json;charset=UTF-8" // as the SDK sends it
	MaxDataKeyBytes                = 1024                             // datakey_length up to 8192 bits
	MaxAdditionalAuthenticatedData = 128
	MaxEncryptionContext           = 8192
)

// ContextBinding is the encryption_context entry that carries the binding
// when a client uses encryption_context instead of
// additional_authenticated_data.
const ContextBinding = "binding"

// Path is the URL path of op in project.
func Path(projectID, op string) string {
	return "/v1.0/" + url.PathEscape(projectID) + "/kms/" + op
}

// CreateDataKeyRequest is the body of create-datakey and
// create-datakey-without-plaintext.
type CreateDataKeyRequest struct {
	KeyID                       string            `json:"key_id"`
	KeySpec                     string            `json:"key_spec,omitempty"`
	DataKeyLength               string            `json:"datakey_length,omitempty"` // bits
	EncryptionContext           map[string]string `json:"encryption_context,omitempty"`
	AdditionalAuthenticatedData string            `json:"additional_authenticated_data,omitempty"`
	Sequence                    string            `json:"sequence,omitempty"`
	Pin                         string            `json:"pin,omitempty"`
	PinType                     string            `json:"pin_type,omitempty"`
}

// CreateDataKeyResponse answers create-datakey; PlainText is absent for
// create-datakey-without-plaintext.
type CreateDataKeyResponse struct {
	KeyID      string    `json:"key_id"`
	PlainText  SecretHex `json:"plain_text"`
	CipherText string    `json:"cipher_text"`
}

// EncryptDataKeyResponse answers encrypt-datakey. The request carries key
// material and is built with EncodeObject.
type EncryptDataKeyResponse struct {
	KeyID         string `json:"key_id"`
	CipherText    string `json:"cipher_text"`
	DataKeyLength string `json:"datakey_length"` // bytes
}

// DecryptDataKeyRequest is the body of decrypt-datakey.
type DecryptDataKeyRequest struct {
	KeyID                       string            `json:"key_id"`
	CipherText                  string            `json:"cipher_text"`
	DataKeyCipherLength         string            `json:"datakey_cipher_length"` // bytes of plaintext
	EncryptionContext           map[string]string `json:"encryption_context,omitempty"`
	AdditionalAuthenticatedData string            `json:"additional_authenticated_data,omitempty"`
	Sequence                    string            `json:"sequence,omitempty"`
}

// DecryptDataKeyResponse answers decrypt-datakey. DataKeyDigest is the hex
// SHA-256 of the plaintext, which the client checks.
type DecryptDataKeyResponse struct {
	DataKey       SecretHex `json:"data_key"`
	DataKeyLength string    `json:"datakey_length"`
	DataKeyDigest string    `json:"datakey_dgst"`
}

// DescribeKeyRequest is the body of describe-key.
type DescribeKeyRequest struct {
	KeyID    string `json:"key_id"`
	Sequence string `json:"sequence,omitempty"`
}

// DescribeKeyResponse answers describe-key.
type DescribeKeyResponse struct {
	KeyInfo KeyInfo `json:"key_info"`
}

// KeyInfo describes a CMK. Dates are milliseconds since the epoch, as
// decimal strings; empty when unset.
type KeyInfo struct {
	KeyID                 string `json:"key_id"`
	DomainID              string `json:"domain_id"`
	KeyAlias              string `json:"key_alias"`
	Realm                 string `json:"realm"`
	KeySpec               string `json:"key_spec"`
	KeyUsage              string `json:"key_usage"`
	KeyDescription        string `json:"key_description"`
	CreationDate          string `json:"creation_date"`
	ScheduledDeletionDate string `json:"scheduled_deletion_date"`
	KeyState              string `json:"key_state"`
	DefaultKeyFlag        string `json:"default_key_flag"`
	KeyType               string `json:"key_type"`
	ExpirationTime        string `json:"expiration_time"`
	Origin                string `json:"origin"`
	KeyRotationEnabled    string `json:"key_rotation_enabled,omitempty"`
	SysEnterpriseProject  string `json:"sys_enterprise_project_id,omitempty"`
	KeystoreID            string `json:"keystore_id,omitempty"`
}

// Key states, as key_state reports them.
const (
	KeyStatePendingActivation = "1"
	KeyStateEnabled           = "2"
	KeyStateDisabled          = "3"
	KeyStatePendingDeletion   = "4"
	KeyStatePendingImport     = "5"
)

// Data key specs of create-datakey (key_spec) and their length in bits.
// The SM ones need an SM4 master key.
var DataKeySpecs = map[string]int{
	"AES_256":  256,
	"AES_128":  128,
	"SM4":      128,
	"HMAC_256": 256,
	"HMAC_384": 384,
	"HMAC_512": 512,
	"HMAC_SM3": 256,
}

// PIN types of pin_type; the service's default is PinTypeCipherText.
const (
	PinTypeCipherText = "CipherText"
	PinTypePlainText  = "PlainText"
)

// ValidKeyID reports whether s is a key id as the service takes it: 36
// characters matching ^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$.
// Aliases are not key ids; the service answers KMS.0205 for them.
func ValidKeyID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
				return false
			}
		}
	}
	return true
}

// SequenceLength is the length of the optional sequence member, a request
// serial number such as 919c82d4-8046-4722-9094-35c3c6524cff.
const SequenceLength = 36

// ParseDecimal parses a JSON-string number: ASCII digits only, no sign, no
// leading zeros, within [lo, hi].
func ParseDecimal(s string, lo, hi int) (int, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}
