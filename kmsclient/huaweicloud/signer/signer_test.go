package signer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// vectorsPath is the published vectors file (see testdata/README.md).
const vectorsPath = "testdata/signing-vectors.json"

type vectors struct {
	AccessKey      string            `json:"access_key"`
	SecretKey      string            `json:"secret_key"`
	Date           string            `json:"x_sdk_date"`
	ExtraNotSigned map[string]string `json:"extra_header_not_signed"`
	Cases          []struct {
		Name             string `json:"name"`
		Method           string `json:"method"`
		URL              string `json:"url"`
		ContentType      string `json:"content_type"`
		Body             string `json:"body"`
		BodySHA256       string `json:"body_sha256"`
		CanonicalRequest string `json:"canonical_request"`
		Authorization    string `json:"authorization"`
	} `json:"cases"`
	CanonicalQuery struct {
		Params   url.Values `json:"params"`
		Expected string     `json:"expected"`
	} `json:"canonical_query_case"`
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		tstest.Unavailable(t, "signing vectors not in testdata (see testdata/README.md): %v", err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("parse signing vectors: %v", err)
	}
	if len(v.Cases) == 0 {
		t.Fatal("no cases in the signing vectors")
	}
	return &v
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	date, err := time.Parse(DateFormat, v.Date)
	if err != nil {
		t.Fatal(err)
	}
	creds := Credentials{AccessKey: v.AccessKey, SecretKey: []byte(v.SecretKey)}
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			body := []byte(c.Body)
			r, err := http.NewRequest(c.Method, c.URL, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for k, val := range v.ExtraNotSigned {
				r.Header.Set(k, val)
			}
			if c.ContentType != "" {
				r.Header.Set("Content-Type", c.ContentType)
			}
			if c.BodySHA256 != "" {
				if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != c.BodySHA256 {
					t.Fatalf("body hash %x, vector says %s", sum, c.BodySHA256)
				}
			}
			if err := Sign(r, body, creds, date); err != nil {
				t.Fatal(err)
			}
			if got := r.Header.Get("Authorization"); got != c.Authorization {
				t.Errorf("Authorization\n got %s\nwant %s", got, c.Authorization)
			}
			if c.CanonicalRequest != "" {
				got, err := canonicalRequest(r, signableHeaders(r.Header), body)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.CanonicalRequest {
					t.Errorf("canonical request\n got %q\nwant %q", got, c.CanonicalRequest)
				}
			}

			// The server side accepts the published signature as is.
			ver := &Verifier{SecretKey: func(ak string) ([]byte, bool) { return []byte(v.SecretKey), ak == v.AccessKey }}
			vr := r.Clone(r.Context())
			vr.Header.Set("Authorization", c.Authorization)
			if ak, err := ver.Verify(vr, body, date.Add(time.Minute)); err != nil || ak != v.AccessKey {
				t.Errorf("Verify(vector) = %q, %v", ak, err)
			}
		})
	}
}

func TestCanonicalQueryVector(t *testing.T) {
	v := loadVectors(t)
	if got := canonicalQuery(v.CanonicalQuery.Params); got != v.CanonicalQuery.Expected {
		t.Errorf("canonical query\n got %s\nwant %s", got, v.CanonicalQuery.Expected)
	}
}

func TestCanonicalURI(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://h/", "/"},
		{"https://h", "/"},
		{"https://h/path", "/path/"},
		{"https://h/path/", "/path/"},
		{"https://h/v1.0/abc/kms/create-datakey", "/v1.0/abc/kms/create-datakey/"},
		{"https://h/a%20b/c~d", "/a%20b/c~d/"},
		{"https://h/a%2Fb", "/a%2Fb/"},
		{"https://h/%E4%B8%80", "/%E4%B8%80/"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := canonicalURI(u)
		if err != nil || got != tc.want {
			t.Errorf("canonicalURI(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSignedHeaderSelection(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Project-Id", "p")
	h.Set("X-Security-Token", "tok")
	h.Set("X-Sdk-Date", "20060102T150405Z")
	h["TEST_UNDERSCORE"] = []string{"x"}
	h["Content-Type-Extra"] = []string{"x"}
	h.Set("Authorization", "old")
	got := strings.Join(signableHeaders(h), ";")
	if want := "x-project-id;x-sdk-date;x-security-token"; got != want {
		t.Errorf("signed headers %s, want %s", got, want)
	}
}

func newSigned(t *testing.T, c Credentials, now time.Time, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "https://kms.example.com/v1.0/p1/kms/describe-key?x=1", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json;charset=UTF-8")
	r.Header.Set("User-Agent", "kmsagent")
	r.Header.Set("X-Project-Id", "p1")
	if err := Sign(r, []byte(body), c, now); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignVerify(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	good := Credentials{AccessKey: "AK1", SecretKey: []byte("sk-one")}
	ver := &Verifier{SecretKey: func(ak string) ([]byte, bool) {
		if ak == "AK1" {
			return []byte("sk-one"), true
		}
		return nil, false
	}}
	const body = `{"key_id":"k"}`

	r := newSigned(t, good, now, body)
	auth := r.Header.Get("Authorization")
	if !strings.Contains(auth, "SignedHeaders=user-agent;x-project-id;x-sdk-date,") {
		t.Errorf("unexpected signed headers in %s", auth)
	}

	tests := []struct {
		name   string
		mutate func(r *http.Request) (body string, at time.Time)
		want   error
	}{
		{"ok", func(r *http.Request) (string, time.Time) { return body, now }, nil},
		{"clock-behind", func(r *http.Request) (string, time.Time) { return body, now.Add(-14 * time.Minute) }, nil},
		{"unsigned-header-changed", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Content-Type", "text/plain")
			return body, now
		}, nil},
		{"stale", func(r *http.Request) (string, time.Time) { return body, now.Add(16 * time.Minute) }, ErrStale},
		{"future", func(r *http.Request) (string, time.Time) { return body, now.Add(-16 * time.Minute) }, ErrStale},
		{"body", func(r *http.Request) (string, time.Time) { return `{"key_id":"l"}`, now }, ErrBadSignature},
		{"path", func(r *http.Request) (string, time.Time) {
			r.URL.Path = "/v1.0/p1/kms/decrypt-datakey"
			return body, now
		}, ErrBadSignature},
		{"query", func(r *http.Request) (string, time.Time) { r.URL.RawQuery = "x=2"; return body, now }, ErrBadSignature},
		// Host is not signed, as the SDK does not sign it: a proxy that
		// rewrites it must not break the signature.
		{"host-rewritten", func(r *http.Request) (string, time.Time) { r.Host = "kms.internal:8443"; return body, now }, nil},
		{"user-agent", func(r *http.Request) (string, time.Time) { r.Header.Set("User-Agent", "other"); return body, now }, ErrBadSignature},
		{"content-sha256-forged", func(r *http.Request) (string, time.Time) {
			sum := sha256.Sum256([]byte(body))
			r.Header.Set(HeaderContentSHA256, hex.EncodeToString(sum[:]))
			return `{"key_id":"l"}`, now
		}, ErrMalformed},
		{"unsigned-payload", func(r *http.Request) (string, time.Time) {
			r.Header.Set(HeaderContentSHA256, UnsignedPayload)
			return body, now
		}, ErrMalformed},
		{"project", func(r *http.Request) (string, time.Time) { r.Header.Set("X-Project-Id", "p2"); return body, now }, ErrBadSignature},
		{"method", func(r *http.Request) (string, time.Time) { r.Method = http.MethodPut; return body, now }, ErrBadSignature},
		{"date-resigned", func(r *http.Request) (string, time.Time) {
			r.Header.Set(HeaderDate, now.Add(time.Second).Format(DateFormat))
			return body, now
		}, ErrBadSignature},
		{"bad-date", func(r *http.Request) (string, time.Time) { r.Header.Set(HeaderDate, "yesterday"); return body, now }, ErrBadDate},
		{"no-auth", func(r *http.Request) (string, time.Time) { r.Header.Del("Authorization"); return body, now }, ErrNoSignature},
		{"other-scheme", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", "Bearer x")
			return body, now
		}, ErrNoSignature},
		{"unknown-ak", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", strings.Replace(auth, "Access=AK1", "Access=AK2", 1))
			return body, now
		}, ErrUnknownAccessKey},
		{"date-not-signed", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", strings.Replace(auth, ";x-sdk-date", "", 1))
			return body, now
		}, ErrMalformed},
		{"token-not-signed", func(r *http.Request) (string, time.Time) {
			r.Header.Set(HeaderSecurityToken, "injected")
			return body, now
		}, ErrMalformed},
		{"signed-header-missing", func(r *http.Request) (string, time.Time) {
			r.Header.Del("X-Project-Id")
			return body, now
		}, ErrMalformed},
		{"short-signature", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", auth[:len(auth)-2])
			return body, now
		}, ErrMalformed},
		{"unknown-field", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", auth+", Extra=1")
			return body, now
		}, ErrMalformed},
		{"upper-case-name", func(r *http.Request) (string, time.Time) {
			r.Header.Set("Authorization", strings.Replace(auth, "x-project-id", "X-Project-Id", 1))
			return body, now
		}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSigned(t, good, now, body)
			b, at := tc.mutate(r)
			ak, err := ver.Verify(r, []byte(b), at)
			if tc.want == nil {
				if err != nil || ak != "AK1" {
					t.Fatalf("Verify = %q, %v; want AK1", ak, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify error %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("wrong-secret", func(t *testing.T) {
		r := newSigned(t, Credentials{AccessKey: "AK1", SecretKey: []byte("sk-two")}, now, body)
		if _, err := ver.Verify(r, []byte(body), now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Verify error %v, want ErrBadSignature", err)
		}
	})
	t.Run("security-token", func(t *testing.T) {
		r := newSigned(t, Credentials{AccessKey: "AK1", SecretKey: []byte("sk-one"), SecurityToken: "tok"}, now, body)
		if !strings.Contains(r.Header.Get("Authorization"), ";x-security-token,") {
			t.Fatalf("token not signed: %s", r.Header.Get("Authorization"))
		}
		if _, err := ver.Verify(r, []byte(body), now); err != nil {
			t.Fatal(err)
		}
		r.Header.Set(HeaderSecurityToken, "other")
		if _, err := ver.Verify(r, []byte(body), now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("swapped token: %v, want ErrBadSignature", err)
		}
	})
	t.Run("missing-credentials", func(t *testing.T) {
		r, _ := http.NewRequest(http.MethodGet, "https://h/", nil)
		if err := Sign(r, nil, Credentials{AccessKey: "AK"}, now); err == nil {
			t.Fatal("Sign without a secret key succeeded")
		}
	})
}

// TestSignContentType: a body that is neither JSON nor BSON is signed as
// UNSIGNED-PAYLOAD, as the SDK signs streamed uploads; JSON bodies are
// hashed. Host is never signed.
func TestSignContentType(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	c := Credentials{AccessKey: "AK1", SecretKey: []byte("sk-one")}
	for _, tc := range []struct {
		contentType string
		unsigned    bool
	}{
		{"", false},
		{"application/json;charset=UTF-8", false},
		{"application/bson", false},
		{"application/octet-stream", true},
		{"text/plain", true},
	} {
		r, err := http.NewRequest(http.MethodPost, "https://kms.example.com/v1.0/p/kms/describe-key", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if tc.contentType != "" {
			r.Header.Set("Content-Type", tc.contentType)
		}
		if err := Sign(r, []byte("{}"), c, now); err != nil {
			t.Fatal(err)
		}
		auth := r.Header.Get("Authorization")
		got := r.Header.Get(HeaderContentSHA256) == UnsignedPayload
		if got != tc.unsigned || got != strings.Contains(auth, "x-sdk-content-sha256") {
			t.Errorf("%q: unsigned payload %v, want %v (%s)", tc.contentType, got, tc.unsigned, auth)
		}
		if strings.Contains(auth, "host") || strings.Contains(auth, "content-type") {
			t.Errorf("%q: %s signs host or content-type", tc.contentType, auth)
		}
	}
}
