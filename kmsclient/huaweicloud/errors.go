package huaweicloud

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
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

// responseError builds the error of a non-2xx response, reading the code
// and message where the SDK's ServiceResponseError reads them (see
// errorFields). reqID is the response's X-Request-Id.
func responseError(op, keyID string, status int, reqID string, body []byte) error {
	code, msg, ok := errorFields(body)
	if !ok {
		// Not a KMS answer (a proxy page, say); keep its first line.
		line, _, _ := bytes.Cut(bytes.TrimSpace(body), []byte("\n"))
		code, msg = "", string(line)
	}
	if !plausibleCode(code) {
		// Codes are printed as they are; anything else is not a code.
		code = ""
	}
	return &kmsclient.Error{
		Provider: providerName, Op: op, KeyID: keyID,
		Kind: kindOf(status, code), Code: code, Status: status,
		Message: redactHex(msg), RequestID: reqID,
	}
}

// maxErrorDepth bounds how deep errorFields looks for a code.
const maxErrorDepth = 8

// errorFields reads an error body as the SDK does: error_code with
// error_msg, else code with message, both non-empty strings, in the top
// level object or else in any object nested in it (KMS wraps them in
// "error", other services in other keys). Where the SDK takes whichever
// nested object its map iteration meets last, this takes "error" first,
// then the others in name order, so the answer does not vary.
func errorFields(body []byte) (code, msg string, ok bool) {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return "", "", false
	}
	return findError(m, maxErrorDepth)
}

func findError(m map[string]any, depth int) (code, msg string, ok bool) {
	for _, names := range [][2]string{{"error_code", "error_msg"}, {"code", "message"}} {
		c, _ := m[names[0]].(string)
		s, _ := m[names[1]].(string)
		if c != "" && s != "" {
			return c, s, true
		}
	}
	if depth == 0 {
		return "", "", false
	}
	keys := slices.Sorted(maps.Keys(m))
	if i := slices.Index(keys, "error"); i > 0 {
		keys = append(append([]string{"error"}, keys[:i]...), keys[i+1:]...)
	}
	for _, k := range keys {
		if inner, isObj := m[k].(map[string]any); isObj {
			if code, msg, ok := findError(inner, depth-1); ok {
				return code, msg, true
			}
		}
	}
	return "", "", false
}

// requestIDOf returns the X-Request-Id of a response, if it is printable
// and of a sensible length.
func requestIDOf(h http.Header) string {
	id := h.Get(wire.HeaderRequestID)
	if !plausibleToken(id, 64) {
		return ""
	}
	return id
}

// plausibleCode reports whether code looks like KMS.0207 or APIGW.0308.
func plausibleCode(code string) bool { return plausibleToken(code, 24) }

// plausibleToken reports whether s is at most n letters, digits, '.', '_'
// and '-'.
func plausibleToken(s string, n int) bool {
	if len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
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
