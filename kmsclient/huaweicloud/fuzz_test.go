package huaweicloud

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// FuzzResponse answers every client call with an arbitrary status and
// body: the client must not panic, must return a typed error for anything
// that is not a valid answer, and must never hand out a key from a reply
// whose digest does not match.
func FuzzResponse(f *testing.F) {
	const fuzzKeyID = "0d0466b0-e727-4d9c-b35d-f84bb474a37f"
	var status int
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	f.Cleanup(srv.Close)
	dir := f.TempDir()
	sk := filepath.Join(dir, "sk")
	if err := os.WriteFile(sk, []byte("secret"), 0o600); err != nil {
		f.Fatal(err)
	}
	c, err := New(context.Background(), Config{Endpoint: srv.URL, ProjectID: "p", AccessKey: "ak", SecretKeyFile: sk, Timeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	wrapped := frame(32, "0A0B0C")
	f.Add(uint8(0), 200, `{"data_key":"00","datakey_length":"1","datakey_dgst":"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"}`)
	f.Add(uint8(1), 200, `{"key_id":"k","plain_text":"`+strings.Repeat("ab", 32)+`","cipher_text":"0102"}`)
	f.Add(uint8(2), 200, `{"key_info":{"key_id":"k","key_state":"2","creation_date":"1700000000000"}}`)
	f.Add(uint8(0), 400, `{"error":{"error_code":"KMS.0207","error_msg":"x"}}`)
	f.Add(uint8(0), 429, `{"error_code":"APIGW.0308","error_msg":"x"}`)
	f.Add(uint8(1), 502, `<html>bad gateway</html>`)
	for _, name := range []string{"create-datakey.response.json", "decrypt-datakey.response.json", "describe-key.response.json",
		"error.kms.json", "error.gateway.json", "error.code-message.json", "error.nested.json"} {
		st := 200
		if strings.HasPrefix(name, "error") {
			st = 400
		}
		for op := range uint8(3) {
			f.Add(op, st, string(readFixture(f, name)))
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, st int, b string) {
		if st < 200 || st > 599 {
			st = 200 + (st%400+400)%400
		}
		status, body = st, b
		ctx := context.Background()
		var err error
		switch op % 3 {
		case 0:
			var k interface{ Wipe() }
			k, err = c.Decrypt(ctx, fuzzKeyID, wrapped, "vol")
			if err == nil {
				k.Wipe()
			}
		case 1:
			var dk *kmsclient.DataKey
			dk, err = c.GenerateDataKey(ctx, fuzzKeyID, 32, "vol")
			if err == nil {
				dk.Wipe()
			}
		case 2:
			_, err = c.DescribeKey(ctx, fuzzKeyID)
		}
		if err == nil {
			return
		}
		var ke *kmsclient.Error
		if !errors.As(err, &ke) || ke.Kind == nil {
			t.Fatalf("untyped error %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error %q", err)
		}
	})
}

// FuzzErrorFields reads arbitrary error bodies as the SDK does: no panic,
// a code only with a message, and an error that is one line.
func FuzzErrorFields(f *testing.F) {
	for _, name := range []string{"error.kms.json", "error.gateway.json", "error.code-message.json", "error.nested.json"} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"code":"X","message":"deep"}}}}}}}}}}`))
	f.Add([]byte(`{"error":{"error_code":"KMS.0207","error_msg":"line\nbreak ` + strings.Repeat("ab", 40) + `"}}`))
	f.Add([]byte(`{"code":1,"message":["x"],"error":null}`))
	f.Add([]byte("<html>\n</html>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg, ok := errorFields(body)
		if ok && (code == "" || msg == "") {
			t.Fatalf("code %q message %q", code, msg)
		}
		err := responseError("describe-key", "k", 400, "rid", body)
		var ke *kmsclient.Error
		if !errors.As(err, &ke) || ke.Kind == nil || ke.RequestID != "rid" {
			t.Fatalf("got %v", err)
		}
		if ke.Code != "" && !plausibleCode(ke.Code) {
			t.Fatalf("implausible code %q", ke.Code)
		}
		if strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("multi-line error %q", err)
		}
	})
}

// FuzzUnframe reads arbitrary wrapped keys (they come from disk): no
// panic, and what it accepts is a valid cipher_text that frames back to
// the same bytes.
func FuzzUnframe(f *testing.F) {
	f.Add(frame(32, "0A0B0c0d"))
	f.Add([]byte{frameV1, 0, 32, 1, 2, 3})
	f.Add([]byte{frameV2, 4, 1, 'z', 'z'})
	f.Add([]byte{frameV2, 0, 0, '0', '0'})
	f.Add([]byte{3, 0, 32, '0', '0'})
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		n, ct, ok := unframe(wrapped)
		if !ok {
			return
		}
		if n < 1 || n > wire.MaxDataKeyBytes || !validCipherText(ct) {
			t.Fatalf("accepted length %d, cipher_text %q", n, ct)
		}
		if wrapped[0] == frameV2 && !bytes.Equal(frame(n, ct), wrapped) {
			t.Fatalf("frame(unframe(%x)) differs", wrapped)
		}
	})
}

// FuzzSecurityKey answers the ECS metadata securitykey request with
// arbitrary status and bytes: no panic, a typed error naming no secret,
// or a credential that is complete and not expired.
func FuzzSecurityKey(f *testing.F) {
	var status int
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	f.Cleanup(srv.Close)
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	good := `{"credential":{"access":"TMPAK","secret":"0123456789abcdef0123456789abcdef01234567","securitytoken":"tok","expires_at":"2030-05-06T08:08:09.000000Z"}}`
	f.Add(200, []byte(good))
	f.Add(200, []byte(strings.Replace(good, "2030-05-06T08", "2030-05-06T07", 1)))
	f.Add(200, []byte(`{"credential":{"access":"A","secret":"S\u0041","securitytoken":"t","expires_at":"x"}}`))
	f.Add(401, []byte(metadataNoAgency))
	f.Add(500, []byte(`{"credential":{"secret":"0123456789abcdef"}}`))
	f.Add(200, []byte(`{"credential":null}`))
	f.Fuzz(func(t *testing.T, st int, b []byte) {
		if st < 200 || st > 599 {
			st = 200 + (st%400+400)%400
		}
		status, body = st, b
		m := &metadataCredentials{endpoint: srv.URL, hc: srv.Client(), timeout: 5 * time.Second, now: func() time.Time { return now }}
		c, err := m.fetch(context.Background())
		if err != nil {
			var ce *credError
			if !errors.As(err, &ce) || ce.kind == nil {
				t.Fatalf("untyped error %v", err)
			}
			if bytes.Contains(b, []byte("secret")) && strings.Contains(err.Error(), "0123456789abcdef") || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error %q quotes the secret or is not one line", err)
			}
			return
		}
		if c.creds.AccessKey == "" || len(c.creds.SecretKey) == 0 || c.creds.SecurityToken == "" || !m.usable(c, now) {
			t.Fatalf("incomplete or expired credential accepted from %q", b)
		}
		c.sk.Wipe()
	})
}
