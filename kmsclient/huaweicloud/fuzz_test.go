package huaweicloud

import (
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
