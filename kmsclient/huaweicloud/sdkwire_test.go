package huaweicloud

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// sdkFixtures holds bodies in the official SDK's shapes; see the README
// beside them.
const sdkFixtures = "wire/testdata/sdk"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(sdkFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// fixtureMembers lists the members of an SDK fixture object.
func fixtureMembers(t *testing.T, name string) map[string]bool {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(readFixture(t, name), &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// TestRequestsMatchSDK: every request member the client sends is one the
// SDK's request model has, as a JSON string; encryption_context, which the
// SDK models lack, only when the config asks for it.
func TestRequestsMatchSDK(t *testing.T) {
	models := map[string]string{
		wire.OpCreateDataKey:  "create-datakey.request.all.json",
		wire.OpEncryptDataKey: "encrypt-datakey.request.all.json",
		wire.OpDecryptDataKey: "decrypt-datakey.request.json",
		wire.OpDescribeKey:    "describe-key.request.json",
	}
	for _, field := range []string{AADFieldAdditional, AADFieldContext} {
		t.Run(field, func(t *testing.T) {
			f := newFakeKMS(t)
			f.addKey(keyA)
			cfg := staticConfig(t, f)
			cfg.AADField = field
			c := newTestClient(t, cfg)
			ctx := t.Context()
			dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Wipe()
			if _, err := c.Encrypt(ctx, keyA, dk.Plaintext, testBinding); err != nil {
				t.Fatal(err)
			}
			k, err := c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			k.Wipe()
			if _, err := c.DescribeKey(ctx, keyA); err != nil {
				t.Fatal(err)
			}
			for _, r := range f.received() {
				known := fixtureMembers(t, models[r.op])
				for name, raw := range r.body {
					if name == "encryption_context" && field == AADFieldContext {
						continue
					}
					if !known[name] {
						t.Errorf("%s: member %s is not in the SDK's request model", r.op, name)
					}
					var s string
					if json.Unmarshal(raw, &s) != nil {
						t.Errorf("%s: member %s is %s, the SDK sends strings", r.op, name, raw)
					}
				}
			}
		})
	}
}

// TestAliasRefused: the service takes key ids only (KMS.0205 otherwise),
// so an alias is refused before any request, on every operation.
func TestAliasRefused(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	ctx := t.Context()
	key, _ := secret.Random(32)
	defer key.Wipe()
	wrapped := frame(32, "0A0B")
	for _, id := range []string{"alias/vol-keys", "vol-keys", strings.ToUpper(keyA), ""} {
		for op, call := range map[string]func() error{
			"generate-data-key": func() error { _, err := c.GenerateDataKey(ctx, id, 32, testBinding); return err },
			"encrypt":           func() error { _, err := c.Encrypt(ctx, id, key, testBinding); return err },
			"decrypt":           func() error { _, err := c.Decrypt(ctx, id, wrapped, testBinding); return err },
			"re-encrypt to":     func() error { _, err := c.ReEncrypt(ctx, keyA, wrapped, id, testBinding); return err },
			"describe-key":      func() error { _, err := c.DescribeKey(ctx, id); return err },
		} {
			err := call()
			if !errors.Is(err, kmsclient.ErrInvalidRequest) || !errors.Is(err, ErrNotKeyID) {
				t.Errorf("%s(%q): %v", op, id, err)
			}
		}
	}
	if n := f.count(); n != 0 {
		t.Fatalf("%d requests reached the KMS", n)
	}
}

// TestCipherTextAsReturned: cipher_text goes back exactly as the service
// wrote it, case included; keys wrapped by earlier versions (binary
// framing) still go back as hex.
func TestCipherTextAsReturned(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	ctx := t.Context()
	var returned string
	f.setMutate(func(op string, r map[string]any) {
		if ct, ok := r["cipher_text"].(string); ok {
			// Mixed case: only an exact copy matches it.
			returned = strings.ToLower(ct[:len(ct)/2]) + ct[len(ct)/2:]
			r["cipher_text"] = returned
		}
	})
	dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	f.setMutate(nil)
	k, err := c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
	if err != nil {
		t.Fatal(err)
	}
	k.Wipe()
	if got := f.last(t).str("cipher_text"); got != returned {
		t.Fatalf("cipher_text sent back as %s, returned as %s", got, returned)
	}

	raw, err := hex.DecodeString(returned)
	if err != nil {
		t.Fatal(err)
	}
	v1 := append([]byte{frameV1, 0, 32}, raw...)
	k, err = c.Decrypt(ctx, keyA, v1, testBinding)
	if err != nil {
		t.Fatalf("version 1 framing: %v", err)
	}
	k.Wipe()
	if got := f.last(t).str("cipher_text"); got != hex.EncodeToString(raw) {
		t.Fatalf("version 1 cipher_text sent as %s", got)
	}
}

// TestSDKErrorShapes: the code and message are read where the SDK reads
// them, and the X-Request-Id is kept in the error.
func TestSDKErrorShapes(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		kind       error
		code, msg  string
	}{
		{"kms", string(readFixture(t, "error.kms.json")), 404, kmsclient.ErrKeyNotFound, "KMS.0207", "Key not found."},
		{"gateway", string(readFixture(t, "error.gateway.json")), 401, kmsclient.ErrAccessDenied, "APIGW.0301", "verify aksk signature fail"},
		{"code and message", string(readFixture(t, "error.code-message.json")), 400, kmsclient.ErrKeyDisabled, "KMS.0209", "The key is disabled."},
		{"nested under another key", string(readFixture(t, "error.nested.json")), 403, kmsclient.ErrAccessDenied, "KMS.0305", "The project ID is invalid."},
		{"error wins over others", `{"a":{"code":"KMS.0101","message":"x"},"error":{"error_code":"KMS.0209","error_msg":"disabled"}}`, 400, kmsclient.ErrKeyDisabled, "KMS.0209", "disabled"},
		{"error_code before code", `{"code":"KMS.0101","message":"x","error_code":"KMS.0209","error_msg":"disabled"}`, 400, kmsclient.ErrKeyDisabled, "KMS.0209", "disabled"},
		{"code without message is no code", `{"error":{"error_code":"KMS.0209"}}`, 400, kmsclient.ErrInvalidRequest, "", `{"error":{"error_code":"KMS.0209"}}`},
		{"deep", `{"a":{"b":{"c":{"error_code":"KMS.0207","error_msg":"gone"}}}}`, 404, kmsclient.ErrKeyNotFound, "KMS.0207", "gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeKMS(t)
			f.addKey(keyA)
			c := newTestClient(t, staticConfig(t, f))
			f.setFail(func(string, int) (int, string) { return tc.status, tc.body })
			_, err := c.DescribeKey(t.Context(), keyA)
			var ke *kmsclient.Error
			if !errors.As(err, &ke) || !errors.Is(err, tc.kind) || ke.Code != tc.code || !strings.Contains(ke.Message, tc.msg) {
				t.Fatalf("got %v (code %q), want %v %s %q", err, ke.Code, tc.kind, tc.code, tc.msg)
			}
			if ke.RequestID != fakeRequestID || !strings.Contains(err.Error(), "request id "+fakeRequestID) {
				t.Fatalf("request id %q in %v", ke.RequestID, err)
			}
		})
	}
}

// TestRequestIDInErrors: the X-Request-Id is kept on a malformed 2xx
// answer too, and an implausible one is dropped.
func TestRequestIDInErrors(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	f.setMutate(func(op string, r map[string]any) { delete(r, "key_info") })
	_, err := c.DescribeKey(t.Context(), keyA)
	var ke *kmsclient.Error
	if !errors.As(err, &ke) || ke.RequestID != fakeRequestID {
		t.Fatalf("got %v", err)
	}
	for id, want := range map[string]string{
		"5f0c8e1d2b3a49a6b7c8d9e0f1a2b3c4": "5f0c8e1d2b3a49a6b7c8d9e0f1a2b3c4",
		"req-1.2_3":                        "req-1.2_3",
		"a b":                              "",
		strings.Repeat("a", 65):            "",
		"":                                 "",
	} {
		h := http.Header{}
		h.Set(wire.HeaderRequestID, id)
		if got := requestIDOf(h); got != want {
			t.Errorf("requestIDOf(%q) = %q, want %q", id, got, want)
		}
	}
}
