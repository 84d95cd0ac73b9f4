package signer

import (
	"bytes"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary Authorization and X-Sdk-Date headers, paths
// and bodies to the verifier a server runs on every request: it must not
// panic, and must never accept a request it did not see signed.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	req := httptest.NewRequest("POST", "/v1.0/p/kms/describe-key?a=1&b=%20", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Content-Type", "application/json")
	if err := Sign(req, []byte(`{}`), Credentials{AccessKey: "AK", SecretKey: []byte("SK")}, now); err != nil {
		f.Fatal(err)
	}
	f.Add(req.Header.Get("Authorization"), req.Header.Get(HeaderDate), "/v1.0/p/kms/describe-key?a=1&b=%20", []byte(`{}`))
	f.Add("SDK-HMAC-SHA256 Access=AK, SignedHeaders=, Signature=", "20261126T120000Z", "/", []byte(nil))
	f.Add("SDK-HMAC-SHA256 Access=, SignedHeaders=x-sdk-date;;, Signature=00", "garbage", "/%zz", []byte("x"))
	v := &Verifier{SecretKey: func(ak string) ([]byte, bool) { return []byte("SK"), ak == "AK" }}
	f.Fuzz(func(t *testing.T, auth, date, target string, body []byte) {
		if len(target) == 0 || target[0] != '/' {
			target = "/" + target
		}
		defer func() {
			if r := recover(); r != nil {
				// httptest.NewRequest panics on a target it cannot parse;
				// that is the fuzz input, not the verifier.
				if _, ok := r.(string); !ok {
					panic(r)
				}
			}
		}()
		r := httptest.NewRequest("POST", target, bytes.NewReader(body))
		r.Header.Set("Authorization", auth)
		r.Header.Set(HeaderDate, date)
		ak, err := v.Verify(r, body, now)
		if err == nil && ak != "AK" {
			t.Fatalf("accepted access key %q", ak)
		}
	})
}
