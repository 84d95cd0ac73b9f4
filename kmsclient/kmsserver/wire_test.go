package kmsserver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// sdkFixtures holds the bodies in the SDK's shapes; see its README.
const sdkFixtures = "../huaweicloud/wire/testdata/sdk"

// post sends a signed request and returns the answer.
func post(t *testing.T, f *fixture, op string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+wire.Path(testProject, op), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderProjectID, testProject)
	if err := signer.Sign(req, body, signer.Credentials{AccessKey: testAK, SecretKey: []byte(testSK)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

func errorCode(t *testing.T, raw []byte) string {
	t.Helper()
	var eb wire.ErrorBody
	if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("not a KMS error body: %q", raw)
	}
	return eb.Error.Code
}

// loadFixture reads an SDK fixture with its members replaced by set.
func loadFixture(t *testing.T, name string, set map[string]string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(sdkFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for k, v := range set {
		if _, ok := m[k]; !ok {
			t.Fatalf("%s has no member %s", name, k)
		}
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// members lists the member names of a JSON object, nested objects as
// "outer.inner".
func members(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %q", raw)
	}
	var out []string
	for k, v := range m {
		out = append(out, k)
		if inner, ok := v.(map[string]any); ok {
			for ik := range maps.Keys(inner) {
				out = append(out, k+"."+ik)
			}
		}
		if _, ok := v.(string); !ok {
			if _, obj := v.(map[string]any); !obj {
				t.Errorf("member %s is %T, the SDK reads strings", k, v)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestSDKRequests sends the SDK-shaped requests and checks what the SDK
// would read back: member names within the SDK's response model, every
// number a string.
func TestSDKRequests(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	info, err := f.store.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	dk, err := f.client(t, "").GenerateDataKey(ctx, info.ID, 32, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	dk.Plaintext.Wipe()
	// The client's framing: version, length, cipher_text as returned.
	cipherText := string(dk.Wrapped[3:])

	tests := []struct {
		fixture, op string
		set         map[string]string
		status      int
		code        string
		response    string // fixture whose members bound the answer's
		keyBytes    int    // length of the returned plain_text or data_key
	}{
		{"create-datakey.request.json", wire.OpCreateDataKey, nil, 200, "", "create-datakey.response.json", 32},
		{"create-datakey.request.json", wire.OpCreateDataKeyNoPlaintext, nil, 200, "", "create-datakey-without-plaintext.response.json", 0},
		{"create-datakey.request.spec.json", wire.OpCreateDataKey, nil, 200, "", "create-datakey.response.json", 16},
		{"create-datakey.request.spec.json", wire.OpCreateDataKey, map[string]string{"key_spec": "HMAC_512"}, 200, "", "create-datakey.response.json", 64},
		{"create-datakey.request.spec.json", wire.OpCreateDataKey, map[string]string{"key_spec": "SM4"}, 400, wire.CodeBadParameter, "", 0},
		{"create-datakey.request.spec.json", wire.OpCreateDataKey, map[string]string{"key_spec": "AES_512"}, 400, wire.CodeBadParameter, "", 0},
		{"create-datakey.request.all.json", wire.OpCreateDataKey, map[string]string{"pin": "", "key_spec": "SM4", "datakey_length": "128"}, 200, "", "create-datakey.response.json", 16},
		{"create-datakey.request.spec.json", wire.OpCreateDataKey, map[string]string{"sequence": "short"}, 400, wire.CodeBadSequence, "", 0},
		{"create-datakey.request.all.json", wire.OpCreateDataKey, nil, 400, wire.CodeBadParameter, "", 0},
		{"create-datakey.request.all.json", wire.OpCreateDataKey, map[string]string{"pin": ""}, 200, "", "create-datakey.response.json", 64},
		{"create-datakey.request.all.json", wire.OpCreateDataKey, map[string]string{"pin": "", "pin_type": "Other"}, 400, wire.CodeBadParameter, "", 0},
		{"encrypt-datakey.request.json", wire.OpEncryptDataKey, nil, 200, "", "encrypt-datakey.response.json", 0},
		{"encrypt-datakey.request.all.json", wire.OpEncryptDataKey, nil, 400, wire.CodeBadParameter, "", 0},
		{"encrypt-datakey.request.all.json", wire.OpEncryptDataKey, map[string]string{"pin": "", "key_spec": ""}, 200, "", "encrypt-datakey.response.json", 0},
		{"decrypt-datakey.request.json", wire.OpDecryptDataKey, map[string]string{"cipher_text": cipherText}, 200, "", "decrypt-datakey.response.json", 32},
		{"decrypt-datakey.request.json", wire.OpDecryptDataKey, map[string]string{"cipher_text": strings.ToLower(cipherText)}, 200, "", "decrypt-datakey.response.json", 32},
		{"describe-key.request.json", wire.OpDescribeKey, nil, 200, "", "describe-key.response.json", 0},
	}
	for _, tt := range tests {
		t.Run(tt.fixture+"/"+tt.op, func(t *testing.T) {
			set := map[string]string{"key_id": info.ID}
			maps.Copy(set, tt.set)
			status, _, raw := post(t, f, tt.op, loadFixture(t, tt.fixture, set))
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, raw)
			}
			if tt.code != "" {
				if got := errorCode(t, raw); got != tt.code {
					t.Fatalf("code %s, want %s", got, tt.code)
				}
				return
			}
			want, err := os.ReadFile(filepath.Join(sdkFixtures, tt.response))
			if err != nil {
				t.Fatal(err)
			}
			known := members(t, want)
			for _, m := range members(t, raw) {
				if !slices.Contains(known, m) {
					t.Errorf("answer member %s is not in the SDK's response model", m)
				}
			}
			var out struct {
				PlainText string `json:"plain_text"`
				DataKey   string `json:"data_key"`
			}
			json.Unmarshal(raw, &out)
			if n := len(out.PlainText+out.DataKey) / 2; n != tt.keyBytes {
				t.Errorf("key of %d bytes, want %d", n, tt.keyBytes)
			}
		})
	}
}

// TestUnbound: create-datakey and encrypt-datakey without a binding are
// valid calls; such a key unwraps without a binding only, and a bound key
// does not unwrap unbound.
func TestUnbound(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	info, err := f.store.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func(cipherText, aad string) (int, []byte) {
		body := map[string]string{"key_id": info.ID, "cipher_text": cipherText, "datakey_cipher_length": "32"}
		if aad != "" {
			body["additional_authenticated_data"] = aad
		}
		raw, _ := json.Marshal(body)
		status, _, out := post(t, f, wire.OpDecryptDataKey, raw)
		return status, out
	}
	var created struct {
		PlainText  string `json:"plain_text"`
		CipherText string `json:"cipher_text"`
	}
	status, _, raw := post(t, f, wire.OpCreateDataKey, []byte(`{"key_id":"`+info.ID+`"}`))
	if status != 200 || json.Unmarshal(raw, &created) != nil {
		t.Fatalf("unbound create-datakey: %d %s", status, raw)
	}
	var encrypted struct {
		CipherText string `json:"cipher_text"`
	}
	status, _, raw = post(t, f, wire.OpEncryptDataKey, loadFixture(t, "encrypt-datakey.request.json", map[string]string{"key_id": info.ID}))
	if status != 200 || json.Unmarshal(raw, &encrypted) != nil {
		t.Fatalf("unbound encrypt-datakey: %d %s", status, raw)
	}
	for _, ct := range []string{created.CipherText, encrypted.CipherText} {
		if status, out := decrypt(ct, ""); status != 200 {
			t.Errorf("unbound decrypt: %d %s", status, out)
		}
		for _, aad := range []string{"vol-1", "\xffunbound"} {
			if status, out := decrypt(ct, aad); status != 400 || errorCode(t, out) != wire.CodeBadCipherText {
				t.Errorf("unbound key with binding %q: %d %s", aad, status, out)
			}
		}
	}
	dk, err := f.client(t, "").GenerateDataKey(ctx, info.ID, 32, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	dk.Plaintext.Wipe()
	if status, out := decrypt(string(dk.Wrapped[3:]), ""); status != 400 || errorCode(t, out) != wire.CodeBadCipherText {
		t.Errorf("bound key without binding: %d %s", status, out)
	}
}

// TestKeyIDNotUUID: the service takes key ids only; an alias, even of an
// existing key, is KMS.0205 on every operation.
func TestKeyIDNotUUID(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	info, err := f.store.CreateKey(ctx, "vol-keys", "")
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"vol-keys", "alias/vol-keys", strings.ToUpper(info.ID), info.ID + " ", "0d0466b0e727-4d9c-b35d-f84bb474a37f-"}
	bodies := map[string]func(id string) []byte{
		wire.OpCreateDataKey: func(id string) []byte {
			return loadFixture(t, "create-datakey.request.json", map[string]string{"key_id": id})
		},
		wire.OpCreateDataKeyNoPlaintext: func(id string) []byte {
			return loadFixture(t, "create-datakey.request.json", map[string]string{"key_id": id})
		},
		wire.OpEncryptDataKey: func(id string) []byte {
			return loadFixture(t, "encrypt-datakey.request.json", map[string]string{"key_id": id})
		},
		wire.OpDecryptDataKey: func(id string) []byte {
			return loadFixture(t, "decrypt-datakey.request.json", map[string]string{"key_id": id})
		},
		wire.OpDescribeKey: func(id string) []byte {
			return loadFixture(t, "describe-key.request.json", map[string]string{"key_id": id})
		},
	}
	for op, body := range bodies {
		for _, id := range ids {
			status, _, raw := post(t, f, op, body(id))
			if status != 400 || errorCode(t, raw) != wire.CodeBadKeyID {
				t.Errorf("%s with key_id %q: %d %s, want 400 %s", op, id, status, raw, wire.CodeBadKeyID)
			}
		}
	}
}

// TestRequestID: every answer, errors included, carries an X-Request-Id,
// a fresh one each time, and the log line names it.
func TestRequestID(t *testing.T) {
	f := newFixture(t, authOpts())
	seen := map[string]bool{}
	check := func(name string, h http.Header) {
		id := h.Get(wire.HeaderRequestID)
		if len(id) != 32 || seen[id] {
			t.Errorf("%s: X-Request-Id %q", name, id)
		}
		if _, err := hex.DecodeString(id); err != nil {
			t.Errorf("%s: X-Request-Id %q is not hex", name, id)
		}
		seen[id] = true
		if !strings.Contains(f.log.String(), "request_id="+id) {
			t.Errorf("%s: no log line names %s", name, id)
		}
	}
	_, h, _ := post(t, f, wire.OpDescribeKey, []byte(`{"key_id":"3f1b6c9e-0000-4000-8000-000000000000"}`))
	check("not found", h)
	_, h, _ = post(t, f, "list-keys", []byte(`{}`))
	check("unknown op", h)
	resp, err := f.srv.Client().Post(f.srv.URL+wire.Path(testProject, wire.OpDescribeKey), wire.ContentType, strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unsigned: %d", resp.StatusCode)
	}
	check("unsigned", resp.Header)
}

// TestBehindProxyRewritingHost: the client does not sign Host, as the SDK
// does not, so a reverse proxy that sends the backend its own Host name
// does not break the signature.
func TestBehindProxyRewritingHost(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	backend, err := url.Parse(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(backend)
		r.Out.Host = "kms-backend.internal"
	}}
	proxy := httptest.NewServer(rp)
	t.Cleanup(proxy.Close)
	skFile := filepath.Join(t.TempDir(), "sk")
	if err := os.WriteFile(skFile, []byte(testSK), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := huaweicloud.New(ctx, huaweicloud.Config{Endpoint: proxy.URL, ProjectID: testProject, AccessKey: testAK, SecretKeyFile: skFile})
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.store.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(ctx, info.ID); err != nil {
		t.Fatalf("through a Host-rewriting proxy: %v", err)
	}
}
