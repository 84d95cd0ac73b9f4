package huaweicloud

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// fastRetry retries at once, in effect; RetryPolicy's sleep and jitter
// hooks are not reachable from this package.
var fastRetry = kmsclient.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, MaxElapsed: 5 * time.Second}

func TestRetry(t *testing.T) {
	throttled := func() (int, string) {
		return http.StatusTooManyRequests, gatewayBody(wire.CodeGatewayThrottled, "The throttling threshold has been reached")
	}
	tests := []struct {
		name      string
		fails     int // answers before the fake answers for real
		answer    func() (int, string)
		wantCalls int
		wantKind  error // nil: success
	}{
		{"429 once", 1, throttled, 2, nil},
		{"429 three times", 3, throttled, 4, nil},
		{"503 twice", 2, func() (int, string) { return 503, "Service Unavailable" }, 3, nil},
		{"500 KMS.0101 once", 1, func() (int, string) { return 500, kmsBody(wire.CodeInternal, "KMS error.") }, 2, nil},
		{"502 proxy page", 2, func() (int, string) { return 502, "<html>Bad Gateway</html>" }, 3, nil},
		{"throttled past MaxAttempts", 99, throttled, 5, kmsclient.ErrThrottled},
		{"400 not retried", 99, func() (int, string) { return 400, kmsBody(wire.CodeBadParameter, "Invalid parameter.") }, 1, kmsclient.ErrInvalidRequest},
		{"403 not retried", 99, func() (int, string) { return 403, kmsBody(wire.CodeNoKeyPermission, "No permission.") }, 1, kmsclient.ErrAccessDenied},
		{"404 KMS.0207 not retried", 99, func() (int, string) { return 404, kmsBody(wire.CodeKeyNotFound, "The key does not exist.") }, 1, kmsclient.ErrKeyNotFound},
		{"KMS.0209 not retried", 99, func() (int, string) { return 400, kmsBody(wire.CodeKeyDisabled, "The key is disabled.") }, 1, kmsclient.ErrKeyDisabled},
		{"401 gateway not retried", 99, func() (int, string) {
			return 401, gatewayBody(wire.CodeGatewayAuth, "Incorrect IAM authentication information")
		}, 1, kmsclient.ErrAccessDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeKMS(t)
			f.addKey(keyA)
			c := newTestClient(t, staticConfig(t, f))
			k := kmsclient.WithRetry(c, fastRetry)
			ctx := t.Context()
			dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Wipe()
			ops := []struct {
				name string
				call func() error
			}{
				{"generate", func() error {
					d, err := k.GenerateDataKey(ctx, keyA, 32, testBinding)
					d.Wipe()
					return err
				}},
				// The encrypt body is zeroed once sent, so each attempt
				// must build it again.
				{"encrypt", func() error {
					w, err := k.Encrypt(ctx, keyA, dk.Plaintext, testBinding)
					if err == nil {
						f.setFail(nil)
						got, derr := c.Decrypt(ctx, keyA, w, testBinding)
						if derr != nil || !got.Equal(dk.Plaintext) {
							t.Errorf("retried encrypt does not decrypt to the key: %v", derr)
						}
						got.Wipe()
					}
					return err
				}},
				{"decrypt", func() error {
					got, err := k.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
					if err == nil && !got.Equal(dk.Plaintext) {
						t.Error("retried decrypt returned another key")
					}
					got.Wipe()
					return err
				}},
				{"describe", func() error { _, err := k.DescribeKey(ctx, keyA); return err }},
			}
			for _, op := range ops {
				start := f.count()
				f.setFail(func(_ string, n int) (int, string) {
					if n-start <= tc.fails {
						return tc.answer()
					}
					return 0, ""
				})
				err := op.call()
				calls := f.count() - start
				if op.name == "encrypt" && err == nil {
					calls-- // the checking decrypt
				}
				if calls != tc.wantCalls {
					t.Errorf("%s: %d requests, want %d (err %v)", op.name, calls, tc.wantCalls, err)
				}
				if tc.wantKind == nil && err != nil {
					t.Errorf("%s: %v", op.name, err)
				}
				if tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
					t.Errorf("%s: got %v, want %v", op.name, err, tc.wantKind)
				}
			}
		})
	}
}

// TestNoRedirects: a signed request goes to the configured endpoint or
// nowhere, with the default client and with one the caller passes.
func TestNoRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		io.WriteString(w, `{"key_info":{"key_id":"x","key_state":"2"}}`)
	}))
	defer other.Close()
	for _, status := range []int{301, 302, 307, 308} {
		for _, name := range []string{"default client", "caller's client"} {
			t.Run(http.StatusText(status)+"/"+name, func(t *testing.T) {
				f := newFakeKMS(t)
				redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, other.URL+r.URL.Path, status)
				}))
				defer redirect.Close()
				cfg := staticConfig(t, f)
				cfg.Endpoint = redirect.URL
				var hc *http.Client
				if name == "caller's client" {
					hc = &http.Client{}
					cfg.HTTPClient = hc
				}
				c := newTestClient(t, cfg)
				k, _ := secret.Random(32)
				defer k.Wipe()
				_, err := c.Encrypt(t.Context(), keyA, k, testBinding)
				if !errors.Is(err, kmsclient.ErrInvalidRequest) || !strings.Contains(err.Error(), "redirects to "+other.URL) {
					t.Fatalf("got %v, want a refused redirect", err)
				}
				_, err = c.DescribeKey(t.Context(), keyA)
				if !errors.Is(err, kmsclient.ErrInvalidRequest) {
					t.Fatalf("describe: got %v, want a refused redirect", err)
				}
				if n := elsewhere.Load(); n != 0 {
					t.Fatalf("the redirect was followed %d times", n)
				}
				if hc != nil && hc.CheckRedirect != nil {
					t.Fatal("the caller's client was changed")
				}
			})
		}
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	f := newFakeKMS(t)
	cfg := staticConfig(t, f)
	cfg.Endpoint = srv.URL
	cfg.Timeout = 50 * time.Millisecond
	c := newTestClient(t, cfg)
	start := time.Now()
	_, err := c.DescribeKey(t.Context(), keyA)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("call took %v with a 50ms timeout", d)
	}
	if !errors.Is(err, kmsclient.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Fatalf("got %v, want ErrUnavailable from the deadline, saying the timeout", err)
	}
	if !kmsclient.Retryable(err) {
		t.Fatal("a timeout is not retryable")
	}

	// A slow body counts as well.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, `{"key_info":`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer slow.Close()
	cfg.Endpoint = slow.URL
	c = newTestClient(t, cfg)
	if _, err := c.DescribeKey(t.Context(), keyA); !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Fatalf("slow body: got %v, want ErrUnavailable saying the timeout", err)
	}
	// The caller's own deadline is not the client's timeout.
	short, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	cfg.Timeout = time.Minute
	c = newTestClient(t, cfg)
	if _, err := c.DescribeKey(short, keyA); !errors.Is(err, kmsclient.ErrUnavailable) || strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("caller's deadline: got %v, want ErrUnavailable without the client's timeout", err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	f := newFakeKMS(t)
	cfg := staticConfig(t, f)
	cfg.Endpoint = url
	c := newTestClient(t, cfg)
	_, err := c.DescribeKey(t.Context(), keyA)
	if !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), "check network access") {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

func TestWrongSecretKey(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	cfg := staticConfig(t, f)
	cfg.SecretKeyFile = writeSK(t, strings.Repeat("w", 40), 0o600)
	c := newTestClient(t, cfg)
	_, err := c.DescribeKey(t.Context(), keyA)
	if !errors.Is(err, kmsclient.ErrAccessDenied) || !strings.Contains(err.Error(), "APIGW.0301") {
		t.Fatalf("got %v, want access denied by the gateway", err)
	}
	cfg = staticConfig(t, f)
	cfg.AccessKey = "UNKNOWNAK"
	c = newTestClient(t, cfg)
	if _, err := c.DescribeKey(t.Context(), keyA); !errors.Is(err, kmsclient.ErrAccessDenied) {
		t.Fatalf("unknown AK: got %v, want access denied", err)
	}
}

func TestLargeResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"key_info":{"key_id":"`+strings.Repeat("a", maxResponse)+`"}}`)
	}))
	defer srv.Close()
	f := newFakeKMS(t)
	cfg := staticConfig(t, f)
	cfg.Endpoint = srv.URL
	c := newTestClient(t, cfg)
	_, err := c.DescribeKey(t.Context(), keyA)
	if !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v, want a refused oversized response", err)
	}
}
