package kmsserver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmsserver"
	"kmsagent/kmsclient/kmstest"
	"kmsagent/kmsclient/local"
)

const (
	testAK      = "QTWAOYTTINDUT2QVKYUC"
	testSK      = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
	testProject = "0b5b8a1f7e0026e12f0ec0153f5d2b1e"
)

type fixture struct {
	store  *local.Store
	srv    *httptest.Server
	log    *tstest.Buffer
	client func(t testing.TB, aadField string) *huaweicloud.Client
}

func newFixture(t testing.TB, opts kmsserver.Options) *fixture {
	t.Helper()
	store, err := local.Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: store, log: &tstest.Buffer{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(f.log, nil))
	}
	f.srv = httptest.NewServer(kmsserver.New(store, opts))
	t.Cleanup(f.srv.Close)
	skFile := filepath.Join(t.TempDir(), "sk")
	if err := os.WriteFile(skFile, []byte(testSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.client = func(t testing.TB, aadField string) *huaweicloud.Client {
		c, err := huaweicloud.New(context.Background(), huaweicloud.Config{
			Endpoint:      f.srv.URL,
			ProjectID:     testProject,
			AccessKey:     testAK,
			SecretKeyFile: skFile,
			AADField:      aadField,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return f
}

func authOpts() kmsserver.Options {
	return kmsserver.Options{
		Clients:   []kmsserver.Client{{AccessKey: testAK, SecretKey: []byte(testSK), Keys: []string{kmsserver.AllKeys}}},
		ProjectID: testProject,
	}
}

func harness(t *testing.T, f *fixture, k kmsclient.KMS) kmstest.Harness {
	ctx := context.Background()
	return kmstest.Harness{
		KMS: k,
		NewKey: func(t *testing.T) string {
			info, err := f.store.CreateKey(ctx, "", "")
			if err != nil {
				t.Fatal(err)
			}
			return info.ID
		},
		Disable: func(t *testing.T, id string) {
			if err := f.store.DisableKey(ctx, id); err != nil {
				t.Fatal(err)
			}
		},
		ScheduleDeletion: func(t *testing.T, id string) {
			if _, err := f.store.ScheduleDeletion(ctx, id, 7); err != nil {
				t.Fatal(err)
			}
		},
		Rotate: func(t *testing.T, id string) {
			if _, err := f.store.RotateKey(ctx, id); err != nil {
				t.Fatal(err)
			}
		},
		MissingKeyID: "3f1b6c9e-0000-4000-8000-000000000000",
	}
}

// TestConformance runs the provider suite through the huaweicloud client
// against the server, with both binding fields.
func TestConformance(t *testing.T) {
	for _, field := range []string{huaweicloud.AADFieldAdditional, huaweicloud.AADFieldContext} {
		t.Run(field, func(t *testing.T) {
			f := newFixture(t, authOpts())
			kmstest.Run(t, harness(t, f, f.client(t, field)))
			if logs := f.log.String(); !strings.Contains(logs, "op=decrypt-datakey") || !strings.Contains(logs, "status=200") {
				t.Errorf("request log lacks decrypt-datakey lines:\n%s", logs)
			}
		})
	}
}

// TestBindingFieldsAgree: a key wrapped with one binding field unwraps
// with the other, so a deployment can switch aad_field.
func TestBindingFieldsAgree(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	info, err := f.store.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	dk, err := f.client(t, huaweicloud.AADFieldAdditional).GenerateDataKey(ctx, info.ID, 32, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	got, err := f.client(t, huaweicloud.AADFieldContext).Decrypt(ctx, info.ID, dk.Wrapped, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(dk.Plaintext) {
		t.Fatal("keys differ")
	}
}

// TestNoKeyMaterialInLogs: the log carries no hex of any key handled.
func TestNoKeyMaterialInLogs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	c := f.client(t, "")
	info, _ := f.store.CreateKey(ctx, "", "")
	dk, err := c.GenerateDataKey(ctx, info.ID, 32, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	if _, err := c.Encrypt(ctx, info.ID, dk.Plaintext, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, info.ID, dk.Wrapped, "other"); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
		t.Fatalf("wrong binding: %v", err)
	}
	logs := f.log.String()
	if strings.Contains(strings.ToLower(logs), hex.EncodeToString(dk.Plaintext.Bytes())) {
		t.Fatal("log contains the data key")
	}
	if n := strings.Count(logs, "kms request"); n != 3 {
		t.Fatalf("want one log line per request (3), got %d:\n%s", n, logs)
	}
}

// rawRequest sends body to op, signed with sk at date when sk is set.
func rawRequest(t *testing.T, f *fixture, method, path string, body []byte, sk string, date time.Time) (int, wire.ErrorDetail) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	if sk != "" {
		if err := signer.Sign(req, body, signer.Credentials{AccessKey: testAK, SecretKey: []byte(sk)}, date); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb wire.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("status %d with a body that is not a KMS error: %q", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, eb.Error
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authOpts())
	info, err := f.store.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	decryptPath := wire.Path(testProject, wire.OpDecryptDataKey)
	describe := []byte(`{"key_id":"` + info.ID + `"}`)
	big := []byte(`{"key_id":"` + strings.Repeat("a", kmsserver.DefaultMaxBody) + `"}`)
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		sk     string
		date   time.Time
		status int
		code   string
	}{
		{"ok", "POST", wire.Path(testProject, wire.OpDescribeKey), describe, testSK, now, 200, ""},
		{"unsigned", "POST", wire.Path(testProject, wire.OpDescribeKey), describe, "", now, 401, wire.CodeGatewayAuth},
		{"bad signature", "POST", wire.Path(testProject, wire.OpDescribeKey), describe, "wrong-secret", now, 401, wire.CodeGatewayAuth},
		{"stale date", "POST", wire.Path(testProject, wire.OpDescribeKey), describe, testSK, now.Add(-16 * time.Minute), 401, wire.CodeGatewayAuth},
		{"future date", "POST", wire.Path(testProject, wire.OpDescribeKey), describe, testSK, now.Add(16 * time.Minute), 401, wire.CodeGatewayAuth},
		{"other project", "POST", wire.Path("other", wire.OpDescribeKey), describe, testSK, now, 403, wire.CodeBadProject},
		{"unknown op", "POST", "/v1.0/" + testProject + "/kms/list-keys", describe, testSK, now, 404, wire.CodeBadURL},
		{"GET", "GET", wire.Path(testProject, wire.OpDescribeKey), nil, testSK, now, 405, wire.CodeBadURL},
		{"oversized", "POST", decryptPath, big, testSK, now, 400, wire.CodeTooLong},
		{"not JSON", "POST", decryptPath, []byte(`{"key_id":`), testSK, now, 400, wire.CodeBadJSON},
		{"unknown member", "POST", wire.Path(testProject, wire.OpDescribeKey), []byte(`{"key_id":"x","kye":1}`), testSK, now, 400, wire.CodeBadJSON},
		{"number not string", "POST", decryptPath, []byte(`{"key_id":"x","cipher_text":"00","datakey_cipher_length":32}`), testSK, now, 400, wire.CodeBadJSON},
		{"trailing data", "POST", wire.Path(testProject, wire.OpDescribeKey), []byte(`{"key_id":"x"} {}`), testSK, now, 400, wire.CodeBadJSON},
		{"missing key", "POST", decryptPath, []byte(`{"cipher_text":"00","datakey_cipher_length":"32"}`), testSK, now, 400, wire.CodeMissingParameter},
		{"bad length", "POST", decryptPath, []byte(`{"key_id":"` + info.ID + `","cipher_text":"00","datakey_cipher_length":"032"}`), testSK, now, 400, wire.CodeBadCipherLength},
		{"cipher not hex", "POST", decryptPath, []byte(`{"key_id":"` + info.ID + `","cipher_text":"zz","datakey_cipher_length":"32"}`), testSK, now, 400, wire.CodeBadCipherText},
		{"garbage cipher", "POST", decryptPath, []byte(`{"key_id":"` + info.ID + `","cipher_text":"0011","datakey_cipher_length":"32","additional_authenticated_data":"b"}`), testSK, now, 400, wire.CodeBadCipherText},
		{"unknown key", "POST", wire.Path(testProject, wire.OpDescribeKey), []byte(`{"key_id":"3f1b6c9e-0000-4000-8000-000000000000"}`), testSK, now, 404, wire.CodeKeyNotFound},
		{"plain not hex", "POST", wire.Path(testProject, wire.OpEncryptDataKey), []byte(`{"key_id":"x","plain_text":"xyz","datakey_plain_length":"32"}`), testSK, now, 400, wire.CodeBadJSON},
		{"digest mismatch", "POST", wire.Path(testProject, wire.OpEncryptDataKey), []byte(`{"key_id":"` + info.ID + `","plain_text":"` + strings.Repeat("00", 64) + `","datakey_plain_length":"32"}`), testSK, now, 400, wire.CodeEncryptDigest},
		{"both bindings", "POST", wire.Path(testProject, wire.OpCreateDataKey), []byte(`{"key_id":"` + info.ID + `","additional_authenticated_data":"a","encryption_context":{"binding":"a"}}`), testSK, now, 400, wire.CodeBadContext},
		{"datakey_length", "POST", wire.Path(testProject, wire.OpCreateDataKey), []byte(`{"key_id":"` + info.ID + `","datakey_length":"255"}`), testSK, now, 400, wire.CodeBadDataKeyLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := rawRequest(t, f, tt.method, tt.path, tt.body, tt.sk, tt.date)
			if status != tt.status || e.Code != tt.code {
				t.Fatalf("got %d %s (%s), want %d %s", status, e.Code, e.Message, tt.status, tt.code)
			}
			if strings.Contains(e.Message, "\n") {
				t.Errorf("multi-line error message %q", e.Message)
			}
		})
	}
}

// TestClientSeesAuthFailure: a client with the wrong SK gets
// ErrAccessDenied, and does not retry it.
func TestClientSeesAuthFailure(t *testing.T) {
	f := newFixture(t, kmsserver.Options{Clients: []kmsserver.Client{{AccessKey: testAK, SecretKey: []byte("not-the-secret"), Keys: []string{kmsserver.AllKeys}}}})
	c := f.client(t, "")
	_, err := c.DescribeKey(context.Background(), "3f1b6c9e-0000-4000-8000-000000000000")
	if !errors.Is(err, kmsclient.ErrAccessDenied) || kmsclient.Retryable(err) {
		t.Fatalf("got %v", err)
	}
}
