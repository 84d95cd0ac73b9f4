package huaweicloud

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

func kmsBody(code, msg string) string {
	return fmt.Sprintf(`{"error":{"error_code":%q,"error_msg":%q}}`, code, msg)
}

func gatewayBody(code, msg string) string {
	return fmt.Sprintf(`{"error_code":%q,"error_msg":%q,"request_id":"d3e0f7a1"}`, code, msg)
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		kind     error
		code     string // reported code
		inMsg    string // substring of the error text
		notInMsg string
	}{
		{"invalid key id", 400, kmsBody("KMS.0205", "Invalid key_id."), kmsclient.ErrKeyNotFound, "KMS.0205", "Invalid key_id.", ""},
		{"key not found", 404, kmsBody("KMS.0207", "The key does not exist."), kmsclient.ErrKeyNotFound, "KMS.0207", "does not exist", ""},
		{"key not found 400", 400, kmsBody("KMS.0207", "Key not found."), kmsclient.ErrKeyNotFound, "KMS.0207", "", ""},
		{"key disabled", 400, kmsBody("KMS.0209", "The key is disabled."), kmsclient.ErrKeyDisabled, "KMS.0209", "enable the key", ""},
		{"pending deletion", 400, kmsBody("KMS.0210", "The key is pending deletion."), kmsclient.ErrKeyPendingDeletion, "KMS.0210", "cancel the scheduled deletion", ""},
		{"token missing", 401, kmsBody("KMS.0301", "No token."), kmsclient.ErrAccessDenied, "KMS.0301", "", ""},
		{"token invalid", 401, kmsBody("KMS.0302", "Invalid token."), kmsclient.ErrAccessDenied, "KMS.0302", "", ""},
		{"token expired", 401, kmsBody("KMS.0303", "Token expired."), kmsclient.ErrAccessDenied, "KMS.0303", "", ""},
		{"KMS.0304", 403, kmsBody("KMS.0304", "Forbidden."), kmsclient.ErrAccessDenied, "KMS.0304", "", ""},
		{"bad project", 403, kmsBody("KMS.0305", "Invalid project."), kmsclient.ErrAccessDenied, "KMS.0305", "check the credentials", ""},
		{"no key permission", 403, kmsBody("KMS.0306", "No permission for the key."), kmsclient.ErrAccessDenied, "KMS.0306", "", ""},
		{"no api permission", 403, kmsBody("KMS.0307", "No permission for the API."), kmsclient.ErrAccessDenied, "KMS.0307", "", ""},
		{"bad parameter", 400, kmsBody("KMS.0308", "Invalid parameter."), kmsclient.ErrInvalidRequest, "KMS.0308", "", ""},
		{"bad json", 400, kmsBody("KMS.0202", "Invalid JSON."), kmsclient.ErrInvalidRequest, "KMS.0202", "", ""},
		{"bad cipher text", 400, kmsBody("KMS.2201", "Invalid cipher_text."), kmsclient.ErrInvalidCiphertext, "KMS.2201", "", ""},
		{"bad cipher length", 400, kmsBody("KMS.2202", "Invalid datakey_cipher_length."), kmsclient.ErrInvalidCiphertext, "KMS.2202", "", ""},
		{"decrypt digest", 400, kmsBody("KMS.2203", "Digest mismatch."), kmsclient.ErrInvalidCiphertext, "KMS.2203", "", ""},
		{"encrypt digest", 400, kmsBody("KMS.2103", "Digest mismatch."), kmsclient.ErrInvalidRequest, "KMS.2103", "", ""},
		{"KMS internal", 500, kmsBody("KMS.0101", "KMS error."), kmsclient.ErrUnavailable, "KMS.0101", "", ""},
		{"KMS I/O", 500, kmsBody("KMS.0102", "Abnormal I/O."), kmsclient.ErrUnavailable, "KMS.0102", "", ""},
		{"gateway auth", 401, gatewayBody("APIGW.0301", "Incorrect IAM authentication information: verify aksk signature fail"), kmsclient.ErrAccessDenied, "APIGW.0301", "verify aksk signature fail", ""},
		{"gateway auth any status", 400, gatewayBody("APIGW.0301", "Incorrect IAM authentication information"), kmsclient.ErrAccessDenied, "APIGW.0301", "", ""},
		{"gateway other 03xx", 400, gatewayBody("APIGW.0303", "Incorrect app authentication information"), kmsclient.ErrAccessDenied, "APIGW.0303", "", ""},
		{"gateway throttled", 429, gatewayBody("APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit,limit:20,time:1 second"), kmsclient.ErrThrottled, "APIGW.0308", "rate limiting", ""},
		{"gateway throttled odd status", 400, gatewayBody("APIGW.0308", "throttled"), kmsclient.ErrThrottled, "APIGW.0308", "", ""},
		{"429 no body", 429, "", kmsclient.ErrThrottled, "", "HTTP 429", ""},
		{"401 no body", 401, "", kmsclient.ErrAccessDenied, "", "HTTP 401", ""},
		{"403 unknown code", 403, kmsBody("KMS.9999", "Denied."), kmsclient.ErrAccessDenied, "KMS.9999", "", ""},
		{"500 no body", 500, "", kmsclient.ErrUnavailable, "", "HTTP 500", ""},
		{"502 proxy page", 502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body></html>", kmsclient.ErrUnavailable, "", "<html>", "nginx"},
		{"503 text", 503, "upstream connect error or disconnect/reset before headers", kmsclient.ErrUnavailable, "", "upstream connect error", ""},
		{"504 gateway JSON", 504, gatewayBody("APIGW.0203", "Backend timeout"), kmsclient.ErrUnavailable, "APIGW.0203", "Backend timeout", ""},
		{"200 non-JSON", 200, "<html>captive portal</html>", kmsclient.ErrUnavailable, "", "malformed KMS response", ""},
		{"200 empty", 200, "", kmsclient.ErrUnavailable, "", "malformed KMS response", ""},
		{"400 other", 400, kmsBody("KMS.1901", "Invalid datakey_length."), kmsclient.ErrInvalidRequest, "KMS.1901", "check the arguments", ""},
		{"404 no body", 404, "", kmsclient.ErrInvalidRequest, "", "HTTP 404", ""},
		{"400 non-JSON", 400, "Bad Request", kmsclient.ErrInvalidRequest, "", "Bad Request", ""},
		{"error is a string", 400, `{"error":"nope"}`, kmsclient.ErrInvalidRequest, "", `{"error":"nope"}`, ""},
		{"multi-line message", 400, kmsBody("KMS.0308", "first line\nsecond line"), kmsclient.ErrInvalidRequest, "KMS.0308", "first line", "second line"},
		{"message echoes key hex", 400, kmsBody("KMS.2101", "bad plain_text 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"), kmsclient.ErrInvalidRequest, "KMS.2101", "bad plain_text [redacted]", "00112233445566778899aabbccddeeff"},
		{"bogus code dropped", 400, kmsBody("00112233445566778899aabbccddeeff00112233", "x"), kmsclient.ErrInvalidRequest, "", "", "0011223344556677"},
		{"long message cut", 400, kmsBody("KMS.0308", strings.Repeat("m", 500)), kmsclient.ErrInvalidRequest, "KMS.0308", strings.Repeat("m", 200) + "...", strings.Repeat("m", 201)},
	}
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.setFail(func(string, int) (int, string) { return tc.status, tc.body })
			_, err := c.DescribeKey(t.Context(), keyA)
			var ke *kmsclient.Error
			if !errors.As(err, &ke) {
				t.Fatalf("got %T %v, want *kmsclient.Error", err, err)
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("got kind %v (%v), want %v", ke.Kind, err, tc.kind)
			}
			if ke.Code != tc.code || ke.Provider != "huaweicloud" || ke.Op != "describe-key" || ke.KeyID != keyA {
				t.Errorf("code %q provider %q op %q key %q; want code %q", ke.Code, ke.Provider, ke.Op, ke.KeyID, tc.code)
			}
			if tc.status != 200 && ke.Status != tc.status {
				t.Errorf("status %d, want %d", ke.Status, tc.status)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, tc.inMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.inMsg)
			}
			if tc.notInMsg != "" && strings.Contains(msg, tc.notInMsg) {
				t.Errorf("error %q contains %q", msg, tc.notInMsg)
			}
			if got, want := kmsclient.Retryable(err), tc.kind == kmsclient.ErrThrottled || tc.kind == kmsclient.ErrUnavailable; got != want {
				t.Errorf("retryable %v, want %v", got, want)
			}
		})
	}
}

// TestErrorOpsAndNoLeak maps errors of every operation and checks that
// neither the plaintext key nor its hex reaches the error, even when the
// server echoes the request.
func TestErrorOpsAndNoLeak(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	ctx := t.Context()
	dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	plain := dk.Plaintext.Bytes()
	hexKey := hex.EncodeToString(plain)
	echo := func(op string, n int) (int, string) {
		// A broken server (or proxy) that quotes what it received.
		r := f.received()[n-1]
		var quoted []string
		for k, v := range r.body {
			quoted = append(quoted, k+"="+string(v))
		}
		return http.StatusBadRequest, kmsBody(wire.CodeBadPlainText, "rejected "+strings.Join(quoted, " ")+" key "+hexKey+" KEY "+strings.ToUpper(hexKey))
	}
	f.setFail(echo)
	ops := map[string]func() error{
		"generate-data-key": func() error { _, err := c.GenerateDataKey(ctx, keyA, 32, testBinding); return err },
		"encrypt":           func() error { _, err := c.Encrypt(ctx, keyA, dk.Plaintext, testBinding); return err },
		"decrypt":           func() error { _, err := c.Decrypt(ctx, keyA, dk.Wrapped, testBinding); return err },
		"re-encrypt":        func() error { _, err := c.ReEncrypt(ctx, keyA, dk.Wrapped, keyA, testBinding); return err },
		"describe-key":      func() error { _, err := c.DescribeKey(ctx, keyA); return err },
	}
	for op, call := range ops {
		t.Run(op, func(t *testing.T) {
			err := call()
			var ke *kmsclient.Error
			if !errors.As(err, &ke) || ke.Op != op || !errors.Is(err, kmsclient.ErrInvalidRequest) {
				t.Fatalf("got %v, want an invalid request error of %s", err, op)
			}
			noKeyMaterial(t, err, plain)
		})
	}

	// Key material in a damaged 2xx answer stays out of the error too.
	f.setFail(nil)
	f.setMutate(func(op string, r map[string]any) {
		if op == wire.OpDecryptDataKey {
			r["datakey_length"] = 32 // a number: the decode fails
		}
	})
	_, err = c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
	if !errors.Is(err, kmsclient.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	noKeyMaterial(t, err, plain)
	f.setMutate(func(op string, r map[string]any) {
		if op == wire.OpDecryptDataKey {
			r["datakey_dgst"] = r["data_key"]
		}
	})
	_, err = c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
	if !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
		t.Fatalf("got %v", err)
	}
	noKeyMaterial(t, err, plain)

	// And a key a caller passes in.
	k, _ := secret.FromBytes([]byte("0123456789abcdef0123456789abcdef"))
	defer k.Wipe()
	f.setFail(echo)
	_, err = c.Encrypt(ctx, keyA, k, testBinding)
	noKeyMaterial(t, err, []byte("0123456789abcdef0123456789abcdef"))
}

func TestRedactHex(t *testing.T) {
	h32 := strings.Repeat("ab", 16)
	h64 := strings.Repeat("0F", 32)
	for in, want := range map[string]string{
		"":                            "",
		"no hex here":                 "no hex here",
		h32:                           "[redacted]",
		h32[:31]:                      h32[:31],
		"key " + h64 + ".":            "key [redacted].",
		"a" + h64 + "z":               "[redacted]z",
		h32 + " " + h32:               "[redacted] [redacted]",
		"0d0466b0-e727-4d9c-b35d-f84": "0d0466b0-e727-4d9c-b35d-f84",
		"project " + testProject:      "project [redacted]",
	} {
		if got := redactHex(in); got != want {
			t.Errorf("redactHex(%q) = %q, want %q", in, got, want)
		}
	}
}
