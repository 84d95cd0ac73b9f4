package huaweicloud

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// codeKinds maps the KMS and API gateway codes the provider tells apart.
// KMS.0301 to KMS.0307 are authentication and permission failures; KMS.0308
// to KMS.0310 are parameter and import-state errors despite their range.
var codeKinds = map[string]error{
	wire.CodeInternal:           kmsclient.ErrUnavailable,
	wire.CodeIO:                 kmsclient.ErrUnavailable,
	wire.CodeBadKeyID:           kmsclient.ErrKeyNotFound,
	wire.CodeKeyNotFound:        kmsclient.ErrKeyNotFound,
	wire.CodeKeyDisabled:        kmsclient.ErrKeyDisabled,
	wire.CodeKeyPendingDeletion: kmsclient.ErrKeyPendingDeletion,
	wire.CodeTokenMissing:       kmsclient.ErrAccessDenied,
	wire.CodeTokenInvalid:       kmsclient.ErrAccessDenied,
	wire.CodeTokenExpired:       kmsclient.ErrAccessDenied,
	"KMS.0304":                  kmsclient.ErrAccessDenied,
	wire.CodeBadProject:         kmsclient.ErrAccessDenied,
	wire.CodeNoKeyPermission:    kmsclient.ErrAccessDenied,
	wire.CodeNoAPIPermission:    kmsclient.ErrAccessDenied,
	// The client derives cipher_text and datakey_cipher_length from the
	// wrapped key, so their rejection means the wrapped key is bad.
	wire.CodeBadCipherText:    kmsclient.ErrInvalidCiphertext,
	wire.CodeBadCipherLength:  kmsclient.ErrInvalidCiphertext,
	wire.CodeDecryptDigest:    kmsclient.ErrInvalidCiphertext,
	wire.CodeGatewayThrottled: kmsclient.ErrThrottled,
}

// kindOf classifies a failed response: by code when the code is known,
// else by HTTP status.
func kindOf(status int, code string) error {
	if k, ok := codeKinds[code]; ok {
		return k
	}
	switch {
	case status == http.StatusTooManyRequests:
		return kmsclient.ErrThrottled
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return kmsclient.ErrAccessDenied
	case strings.HasPrefix(code, "APIGW.03"):
		// Gateway authentication failures (signature, expired token, ...).
		return kmsclient.ErrAccessDenied
	case status >= 500:
		return kmsclient.ErrUnavailable
	default:
		return kmsclient.ErrInvalidRequest
	}
}

// responseError builds the error of a non-2xx response. KMS wraps the code
// in {"error":{...}}; the API gateway puts it at the top level.
func responseError(op, keyID string, status int, body []byte) error {
	var code, msg string
	var wrapped wire.ErrorBody
	var top wire.ErrorDetail
	switch {
	case json.Unmarshal(body, &wrapped) == nil && wrapped.Error.Code != "":
		code, msg = wrapped.Error.Code, wrapped.Error.Message
	case json.Unmarshal(body, &top) == nil && top.Code != "":
		code, msg = top.Code, top.Message
	default:
		// Not a KMS answer (a proxy page, say); keep its first line.
		line, _, _ := bytes.Cut(bytes.TrimSpace(body), []byte("\n"))
		msg = string(line)
	}
	if !plausibleCode(code) {
		// Codes are printed as they are; anything else is not a code.
		code = ""
	}
	return &kmsclient.Error{
		Provider: providerName, Op: op, KeyID: keyID,
		Kind: kindOf(status, code), Code: code, Status: status,
		Message: redactHex(msg),
	}
}

// plausibleCode reports whether code looks like KMS.0207 or APIGW.0308.
func plausibleCode(code string) bool {
	if len(code) > 24 {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// redactHex blanks long hex runs in server messages, in case a server or
// proxy echoes a request carrying key material.
func redactHex(s string) string {
	const minRun = 32
	var b strings.Builder
	run := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isHex(s[i]) {
			run++
			continue
		}
		if run >= minRun {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(s[i-run : i])
		}
		run = 0
		if i < len(s) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
