package aws

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// opErr wraps err the way the SDK returns an error answer from KMS.
func opErr(status int, requestID string, err error) error {
	return &smithy.OperationError{
		ServiceID:     "KMS",
		OperationName: "Decrypt",
		Err: &awshttp.ResponseError{
			RequestID: requestID,
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      err,
			},
		},
	}
}

func generic(code string, fault smithy.ErrorFault) error {
	return &smithy.GenericAPIError{Code: code, Message: "message for " + code, Fault: fault}
}

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name       string
		err        error
		kind       error
		code       string
		status     int
		wantErr    bool // the cause is kept in Err
		wantInText string
	}{
		{"not found", opErr(400, "rid-1", &types.NotFoundException{Message: awssdk.String("Key 'k' does not exist")}),
			kmsclient.ErrKeyNotFound, "NotFoundException", 400, false, "Key 'k' does not exist (request id rid-1)"},
		{"disabled", opErr(400, "", &types.DisabledException{Message: awssdk.String("k is disabled.")}),
			kmsclient.ErrKeyDisabled, "DisabledException", 400, false, "k is disabled."},
		{"invalid state", opErr(400, "", &types.KMSInvalidStateException{Message: awssdk.String("k is pending deletion.")}),
			kmsclient.ErrKeyPendingDeletion, "KMSInvalidStateException", 400, false, "pending deletion"},
		{"invalid ciphertext", opErr(400, "", &types.InvalidCiphertextException{}),
			kmsclient.ErrInvalidCiphertext, "InvalidCiphertextException", 400, false, ""},
		{"incorrect key", opErr(400, "", &types.IncorrectKeyException{}),
			kmsclient.ErrInvalidCiphertext, "IncorrectKeyException", 400, false, ""},
		{"access denied", opErr(400, "", generic("AccessDeniedException", smithy.FaultClient)),
			kmsclient.ErrAccessDenied, "AccessDeniedException", 400, false, ""},
		{"unrecognized client", opErr(400, "", generic("UnrecognizedClientException", smithy.FaultClient)),
			kmsclient.ErrAccessDenied, "UnrecognizedClientException", 400, false, ""},
		{"invalid signature", opErr(400, "", generic("InvalidSignatureException", smithy.FaultClient)),
			kmsclient.ErrAccessDenied, "InvalidSignatureException", 400, false, ""},
		{"expired token", opErr(400, "", generic("ExpiredTokenException", smithy.FaultClient)),
			kmsclient.ErrAccessDenied, "ExpiredTokenException", 400, false, ""},
		{"throttling", opErr(400, "", generic("ThrottlingException", smithy.FaultClient)),
			kmsclient.ErrThrottled, "ThrottlingException", 400, false, ""},
		{"limit exceeded", opErr(400, "", &types.LimitExceededException{}),
			kmsclient.ErrThrottled, "LimitExceededException", 400, false, ""},
		{"unknown code 429", opErr(429, "", generic("SlowDown", smithy.FaultUnknown)),
			kmsclient.ErrThrottled, "SlowDown", 429, false, ""},
		{"internal", opErr(500, "", &types.KMSInternalException{}),
			kmsclient.ErrUnavailable, "KMSInternalException", 500, false, ""},
		{"dependency timeout", opErr(503, "", &types.DependencyTimeoutException{}),
			kmsclient.ErrUnavailable, "DependencyTimeoutException", 503, false, ""},
		{"key unavailable", opErr(500, "", &types.KeyUnavailableException{}),
			kmsclient.ErrUnavailable, "KeyUnavailableException", 500, false, ""},
		{"unknown code 502", opErr(502, "", generic("UnknownError", smithy.FaultUnknown)),
			kmsclient.ErrUnavailable, "UnknownError", 502, false, ""},
		{"unknown server fault", generic("Whatever", smithy.FaultServer),
			kmsclient.ErrUnavailable, "Whatever", 0, false, ""},
		{"invalid key usage", opErr(400, "", &types.InvalidKeyUsageException{}),
			kmsclient.ErrInvalidRequest, "InvalidKeyUsageException", 400, false, ""},
		{"validation", opErr(400, "", generic("ValidationException", smithy.FaultClient)),
			kmsclient.ErrInvalidRequest, "ValidationException", 400, false, ""},
		{"unknown code 400", opErr(400, "", generic("SomethingNew", smithy.FaultClient)),
			kmsclient.ErrInvalidRequest, "SomethingNew", 400, false, ""},
		{"unknown code 403", opErr(403, "", generic("Forbidden", smithy.FaultClient)),
			kmsclient.ErrAccessDenied, "Forbidden", 403, false, ""},
		{"multi-line message", opErr(400, "", &types.NotFoundException{Message: awssdk.String("first\nsecond")}),
			kmsclient.ErrKeyNotFound, "NotFoundException", 400, false, "first"},
		{"connection refused", &smithy.OperationError{Err: &smithyhttp.RequestSendError{Err: refused}},
			kmsclient.ErrUnavailable, "", 0, true, "connection refused"},
		{"timeout", &smithy.OperationError{Err: &awssdk.RequestCanceledError{Err: context.DeadlineExceeded}},
			kmsclient.ErrUnavailable, "", 0, true, "deadline exceeded"},
		{"unparsable answer", opErr(200, "", &smithy.DeserializationError{Err: io.ErrUnexpectedEOF}),
			kmsclient.ErrUnavailable, "", 200, true, ""},
		{"no credentials", &smithy.OperationError{Err: &v4.SigningError{Err: errors.New("failed to retrieve credentials: no EC2 IMDS role found")}},
			kmsclient.ErrAccessDenied, "", 0, true, "IMDS role"},
		{"credentials unreachable", &smithy.OperationError{Err: &v4.SigningError{Err: &smithyhttp.RequestSendError{Err: refused}}},
			kmsclient.ErrUnavailable, "", 0, true, ""},
		{"sts throttled", &smithy.OperationError{Err: &v4.SigningError{Err: opErr(400, "", generic("Throttling", smithy.FaultClient))}},
			kmsclient.ErrThrottled, "Throttling", 0, true, ""},
		{"sts denied", &smithy.OperationError{Err: &v4.SigningError{Err: opErr(403, "", generic("AccessDenied", smithy.FaultClient))}},
			kmsclient.ErrAccessDenied, "AccessDenied", 0, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := classify("decrypt", "key-1", tt.err)
			if e.Kind != tt.kind || e.Code != tt.code || e.Status != tt.status {
				t.Fatalf("got kind %q code %q status %d, want %q %q %d", e.Kind, e.Code, e.Status, tt.kind, tt.code, tt.status)
			}
			if e.Provider != "aws" || e.Op != "decrypt" || e.KeyID != "key-1" {
				t.Fatalf("provider/op/key: %q %q %q", e.Provider, e.Op, e.KeyID)
			}
			if (e.Err != nil) != tt.wantErr {
				t.Fatalf("Err = %v, want cause kept: %v", e.Err, tt.wantErr)
			}
			var err error = e
			if !errors.Is(err, tt.kind) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.kind)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("message spans lines: %q", msg)
			}
			if !strings.Contains(msg, tt.wantInText) {
				t.Fatalf("message %q does not contain %q", msg, tt.wantInText)
			}
		})
	}
}

func TestClassifyKeepsCause(t *testing.T) {
	e := classify("decrypt", "k", &smithy.OperationError{Err: &awssdk.RequestCanceledError{Err: context.Canceled}})
	if !errors.Is(e, context.Canceled) || !errors.Is(e, kmsclient.ErrUnavailable) {
		t.Fatalf("cancellation not visible through %v", e)
	}
}

func TestRefineInvalidState(t *testing.T) {
	describeErr := errors.New("AccessDeniedException: not allowed to describe")
	tests := []struct {
		name   string
		states map[string]types.KeyState // missing: describe fails
		keys   []string
		want   error
	}{
		{"pending deletion", map[string]types.KeyState{"a": types.KeyStatePendingDeletion}, []string{"a"}, kmsclient.ErrKeyPendingDeletion},
		{"pending replica deletion", map[string]types.KeyState{"a": types.KeyStatePendingReplicaDeletion}, []string{"a"}, kmsclient.ErrKeyPendingDeletion},
		{"pending import", map[string]types.KeyState{"a": types.KeyStatePendingImport}, []string{"a"}, kmsclient.ErrInvalidRequest},
		{"custom key store unavailable", map[string]types.KeyState{"a": types.KeyStateUnavailable}, []string{"a"}, kmsclient.ErrUnavailable},
		{"creating", map[string]types.KeyState{"a": types.KeyStateCreating}, []string{"a"}, kmsclient.ErrUnavailable},
		{"disabled meanwhile", map[string]types.KeyState{"a": types.KeyStateDisabled}, []string{"a"}, kmsclient.ErrKeyDisabled},
		{"enabled meanwhile", map[string]types.KeyState{"a": types.KeyStateEnabled}, []string{"a"}, kmsclient.ErrUnavailable},
		{"cannot describe", nil, []string{"a"}, kmsclient.ErrKeyPendingDeletion},
		{"destination pending deletion", map[string]types.KeyState{"a": types.KeyStateEnabled, "b": types.KeyStatePendingDeletion}, []string{"a", "b"}, kmsclient.ErrKeyPendingDeletion},
		{"source pending import", map[string]types.KeyState{"a": types.KeyStatePendingImport, "b": types.KeyStatePendingDeletion}, []string{"a", "b"}, kmsclient.ErrInvalidRequest},
		{"source not describable", map[string]types.KeyState{"b": types.KeyStateUnavailable}, []string{"a", "b"}, kmsclient.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			state := func(_ context.Context, id string) (types.KeyState, error) {
				asked = append(asked, id)
				s, ok := tt.states[id]
				if !ok {
					return "", describeErr
				}
				return s, nil
			}
			if got := refineInvalidState(context.Background(), state, tt.keys); got != tt.want {
				t.Fatalf("got %v, want %v (described %v)", got, tt.want, asked)
			}
		})
	}
}

func TestKeyStateAndRegion(t *testing.T) {
	for in, want := range map[types.KeyState]kmsclient.KeyState{
		types.KeyStateEnabled:                kmsclient.KeyEnabled,
		types.KeyStateDisabled:               kmsclient.KeyDisabled,
		types.KeyStatePendingDeletion:        kmsclient.KeyPendingDeletion,
		types.KeyStatePendingReplicaDeletion: kmsclient.KeyPendingDeletion,
		types.KeyStatePendingImport:          kmsclient.KeyPendingImport,
		types.KeyStateUnavailable:            kmsclient.KeyUnavailable,
		types.KeyStateUpdating:               "Updating",
	} {
		if got := keyState(in); got != want {
			t.Errorf("keyState(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"arn:aws:kms:eu-west-1:111122223333:key/0b0c": "eu-west-1",
		"arn:aws-cn:kms:cn-north-1:1:key/x":           "cn-north-1",
		"0b0c0d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e":        "",
		"alias/volumes":                               "",
	} {
		if got := regionOf(in); got != want {
			t.Errorf("regionOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeKMS is an httptest server speaking just enough of the KMS JSON
// protocol: each call takes the next canned answer (the last one
// repeats) and the decoded request is recorded.
type fakeKMS struct {
	*httptest.Server
	mu       sync.Mutex
	answers  []answer
	requests []fakeRequest
}

type answer struct {
	status int
	body   string
	delay  time.Duration
}

type fakeRequest struct {
	target string
	body   map[string]any
}

func newFakeKMS(t *testing.T, answers ...answer) *fakeKMS {
	t.Helper()
	f := &fakeKMS{answers: answers}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve)) // listens on 127.0.0.1
	t.Cleanup(f.Close)
	return f
}

func (f *fakeKMS) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{target: r.Header.Get("X-Amz-Target"), body: body})
	a := f.answers[min(len(f.requests), len(f.answers))-1]
	f.mu.Unlock()
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (f *fakeKMS) calls() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

const testARN = "arn:aws:kms:eu-west-1:111122223333:key/0b0c0d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"

var testPlain = bytes.Repeat([]byte{0x5a}, 32)

func okDecrypt() answer {
	return answer{status: 200, body: fmt.Sprintf(`{"KeyId":%q,"Plaintext":%q,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}`,
		testARN, base64.StdEncoding.EncodeToString(testPlain))}
}

func kmsErr(status int, code string) answer {
	return answer{status: status, body: fmt.Sprintf(`{"__type":%q,"message":"canned %s"}`, code, code)}
}

func TestRetryThroughWithRetry(t *testing.T) {
	policy := kmsclient.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	tests := []struct {
		name      string
		answers   []answer
		retry     bool
		wantCalls int
		wantKind  error // nil: success
	}{
		{"500 then success", []answer{kmsErr(500, "KMSInternalException"), okDecrypt()}, true, 2, nil},
		{"503 without body then success", []answer{{status: 503, body: "upstream down"}, okDecrypt()}, true, 2, nil},
		{"throttled then success", []answer{kmsErr(400, "ThrottlingException"), okDecrypt()}, true, 2, nil},
		{"429 then success", []answer{{status: 429}, okDecrypt()}, true, 2, nil},
		{"5xx until the policy gives up", []answer{kmsErr(500, "KMSInternalException")}, true, 3, kmsclient.ErrUnavailable},
		{"400 is not retried", []answer{kmsErr(400, "InvalidCiphertextException"), okDecrypt()}, true, 1, kmsclient.ErrInvalidCiphertext},
		{"access denied is not retried", []answer{kmsErr(400, "AccessDeniedException"), okDecrypt()}, true, 1, kmsclient.ErrAccessDenied},
		{"the SDK itself does not retry", []answer{kmsErr(500, "KMSInternalException"), okDecrypt()}, false, 1, kmsclient.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKMS(t, tt.answers...)
			var k kmsclient.KMS = newTestClient(t, f.URL, 5*time.Second)
			if tt.retry {
				k = kmsclient.WithRetry(k, policy)
			}
			got, err := k.Decrypt(context.Background(), testARN, []byte("wrapped"), "binding-1")
			if calls := len(f.calls()); calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if tt.wantKind != nil {
				if !errors.Is(err, tt.wantKind) {
					t.Fatalf("got %v, want kind %v", err, tt.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer got.Wipe()
			if !bytes.Equal(got.Bytes(), testPlain) {
				t.Fatal("wrong plaintext")
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	f := newFakeKMS(t, answer{status: 200, body: "{}", delay: 5 * time.Second})
	c := newTestClient(t, f.URL, 100*time.Millisecond)
	start := time.Now()
	_, err := c.Decrypt(context.Background(), testARN, []byte("wrapped"), "binding-1")
	if !errors.Is(err, kmsclient.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("got %v, want unavailable after the deadline, saying the timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v despite a 100ms timeout", d)
	}
	// The caller's own deadline is not the client's timeout.
	c = newTestClient(t, f.URL, time.Minute)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Decrypt(short, testARN, []byte("wrapped"), "binding-1"); !errors.Is(err, kmsclient.ErrUnavailable) || strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("caller's deadline: got %v, want unavailable without the client's timeout", err)
	}
}

// TestRequests checks what goes on the wire: the key ids, the binding in
// the encryption context, and that plaintext from KMS lands in a Key.
func TestRequests(t *testing.T) {
	ctx := context.Background()
	wantEC := map[string]any{BindingContextKey: "vol-uuid"}
	wrappedB64 := base64.StdEncoding.EncodeToString([]byte("wrapped"))

	t.Run("GenerateDataKey", func(t *testing.T) {
		f := newFakeKMS(t, answer{status: 200, body: fmt.Sprintf(`{"KeyId":%q,"Plaintext":%q,"CiphertextBlob":%q}`,
			testARN, base64.StdEncoding.EncodeToString(testPlain), wrappedB64)})
		c := newTestClient(t, f.URL, 0)
		dk, err := c.GenerateDataKey(ctx, "alias/volumes", 32, "vol-uuid")
		if err != nil {
			t.Fatal(err)
		}
		defer dk.Wipe()
		if dk.KeyID != testARN || string(dk.Wrapped) != "wrapped" || !bytes.Equal(dk.Plaintext.Bytes(), testPlain) {
			t.Fatalf("data key: %q %q", dk.KeyID, dk.Wrapped)
		}
		req := f.calls()[0]
		if req.target != "TrentService.GenerateDataKey" || req.body["KeyId"] != "alias/volumes" ||
			req.body["NumberOfBytes"] != float64(32) || fmt.Sprint(req.body["EncryptionContext"]) != fmt.Sprint(wantEC) {
			t.Fatalf("request %s %v", req.target, req.body)
		}
	})

	t.Run("GenerateDataKeyShortAnswer", func(t *testing.T) {
		f := newFakeKMS(t, answer{status: 200, body: fmt.Sprintf(`{"KeyId":%q,"Plaintext":%q,"CiphertextBlob":%q}`,
			testARN, base64.StdEncoding.EncodeToString(testPlain[:16]), wrappedB64)})
		c := newTestClient(t, f.URL, 0)
		if _, err := c.GenerateDataKey(ctx, testARN, 32, "vol-uuid"); !errors.Is(err, kmsclient.ErrUnavailable) {
			t.Fatalf("16-byte answer to a 32-byte request: %v", err)
		}
	})

	t.Run("Decrypt", func(t *testing.T) {
		f := newFakeKMS(t, okDecrypt())
		c := newTestClient(t, f.URL, 0)
		k, err := c.Decrypt(ctx, testARN, []byte("wrapped"), "vol-uuid")
		if err != nil {
			t.Fatal(err)
		}
		k.Wipe()
		req := f.calls()[0]
		if req.target != "TrentService.Decrypt" || req.body["KeyId"] != testARN || req.body["CiphertextBlob"] != wrappedB64 ||
			fmt.Sprint(req.body["EncryptionContext"]) != fmt.Sprint(wantEC) {
			t.Fatalf("request %s %v", req.target, req.body)
		}
	})

	t.Run("Encrypt", func(t *testing.T) {
		f := newFakeKMS(t, answer{status: 200, body: fmt.Sprintf(`{"KeyId":%q,"CiphertextBlob":%q}`, testARN, wrappedB64)})
		c := newTestClient(t, f.URL, 0)
		in, err := secret.FromBytes(bytes.Clone(testPlain))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Wipe()
		w, err := c.Encrypt(ctx, testARN, in, "vol-uuid")
		if err != nil || string(w) != "wrapped" {
			t.Fatalf("encrypt: %q, %v", w, err)
		}
		req := f.calls()[0]
		if req.target != "TrentService.Encrypt" || req.body["Plaintext"] != base64.StdEncoding.EncodeToString(testPlain) ||
			fmt.Sprint(req.body["EncryptionContext"]) != fmt.Sprint(wantEC) {
			t.Fatalf("request %s %v", req.target, req.body)
		}
	})

	t.Run("EncryptValidationMessageDropped", func(t *testing.T) {
		// An emulator quoting the plaintext back must not get it into the error.
		quoted := base64.StdEncoding.EncodeToString(testPlain)
		f := newFakeKMS(t, answer{status: 400, body: fmt.Sprintf(`{"__type":"ValidationException","message":"Value '%s' at 'Plaintext' failed"}`, quoted)})
		c := newTestClient(t, f.URL, 0)
		in, err := secret.FromBytes(bytes.Clone(testPlain))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Wipe()
		_, err = c.Encrypt(ctx, testARN, in, "vol-uuid")
		if !errors.Is(err, kmsclient.ErrInvalidRequest) || strings.Contains(err.Error(), quoted) {
			t.Fatalf("encrypt: %v", err)
		}
	})

	t.Run("ReEncrypt", func(t *testing.T) {
		f := newFakeKMS(t, answer{status: 200, body: fmt.Sprintf(`{"KeyId":%q,"SourceKeyId":%q,"CiphertextBlob":%q}`, testARN, testARN, wrappedB64)})
		c := newTestClient(t, f.URL, 0)
		if _, err := c.ReEncrypt(ctx, "src-key", []byte("old"), "dst-key", "vol-uuid"); err != nil {
			t.Fatal(err)
		}
		req := f.calls()[0]
		if req.target != "TrentService.ReEncrypt" || req.body["SourceKeyId"] != "src-key" || req.body["DestinationKeyId"] != "dst-key" ||
			fmt.Sprint(req.body["SourceEncryptionContext"]) != fmt.Sprint(wantEC) ||
			fmt.Sprint(req.body["DestinationEncryptionContext"]) != fmt.Sprint(wantEC) {
			t.Fatalf("request %s %v", req.target, req.body)
		}
	})

	t.Run("InvalidStateRefined", func(t *testing.T) {
		f := newFakeKMS(t, kmsErr(400, codeInvalidState),
			answer{status: 200, body: fmt.Sprintf(`{"KeyMetadata":{"KeyId":"k","Arn":%q,"KeyState":"PendingImport"}}`, testARN)})
		c := newTestClient(t, f.URL, 0)
		_, err := c.Decrypt(ctx, testARN, []byte("wrapped"), "vol-uuid")
		var ke *kmsclient.Error
		if !errors.As(err, &ke) || ke.Kind != kmsclient.ErrInvalidRequest || ke.Code != codeInvalidState {
			t.Fatalf("got %v", err)
		}
		if calls := f.calls(); len(calls) != 2 || calls[1].target != "TrentService.DescribeKey" || calls[1].body["KeyId"] != testARN {
			t.Fatalf("calls %v", calls)
		}
	})
}

// TestRefusedLocally checks arguments that must never reach AWS.
func TestRefusedLocally(t *testing.T) {
	f := newFakeKMS(t, answer{status: 500, body: "{}"})
	c := newTestClient(t, f.URL, 0)
	ctx := context.Background()
	key, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Wipe()
	big, err := secret.Random(maxPlaintextBytes + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Wipe()
	w := []byte("wrapped")

	tests := []struct {
		name string
		call func() error
	}{
		{"generate, empty binding", func() error { _, err := c.GenerateDataKey(ctx, testARN, 32, ""); return err }},
		{"decrypt, empty binding", func() error { _, err := c.Decrypt(ctx, testARN, w, ""); return err }},
		{"encrypt, empty binding", func() error { _, err := c.Encrypt(ctx, testARN, key, ""); return err }},
		{"re-encrypt, empty binding", func() error { _, err := c.ReEncrypt(ctx, testARN, w, testARN, ""); return err }},
		{"generate, empty key id", func() error { _, err := c.GenerateDataKey(ctx, "", 32, "b"); return err }},
		{"re-encrypt, empty destination", func() error { _, err := c.ReEncrypt(ctx, testARN, w, "", "b"); return err }},
		{"describe, empty key id", func() error { _, err := c.DescribeKey(ctx, ""); return err }},
		{"generate, size 0", func() error { _, err := c.GenerateDataKey(ctx, testARN, 0, "b"); return err }},
		{"generate, size 1025", func() error { _, err := c.GenerateDataKey(ctx, testARN, 1025, "b"); return err }},
		{"decrypt, empty blob", func() error { _, err := c.Decrypt(ctx, testARN, nil, "b"); return err }},
		{"encrypt, nil key", func() error { _, err := c.Encrypt(ctx, testARN, nil, "b"); return err }},
		{"encrypt, too long", func() error { _, err := c.Encrypt(ctx, testARN, big, "b"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ke *kmsclient.Error
			if !errors.As(err, &ke) || ke.Kind != kmsclient.ErrInvalidRequest || ke.Provider != "aws" {
				t.Fatalf("got %v, want an aws ErrInvalidRequest", err)
			}
		})
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestNewConfig(t *testing.T) {
	isolateSDK(t)
	ctx := context.Background()
	if _, err := New(ctx, Config{}); !errors.Is(err, kmsclient.ErrInvalidRequest) || !strings.Contains(err.Error(), "region") {
		t.Fatalf("no region: %v", err)
	}
	t.Setenv("AWS_REGION", "ap-southeast-2")
	c, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Region() != "ap-southeast-2" || c.timeout != DefaultTimeout || c.Provider() != "aws" {
		t.Fatalf("region %q timeout %v", c.Region(), c.timeout)
	}
	c, err = New(ctx, Config{Region: "eu-central-1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c.Region() != "eu-central-1" || c.timeout != time.Second {
		t.Fatalf("region %q timeout %v", c.Region(), c.timeout)
	}
	if _, err := New(ctx, Config{Region: "eu-central-1", Timeout: -time.Second}); !errors.Is(err, kmsclient.ErrInvalidRequest) {
		t.Fatalf("negative timeout: %v", err)
	}
}
