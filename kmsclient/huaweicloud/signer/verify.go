package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Errors returned by Verifier.Verify. They describe the request, never the
// expected signature, so they are safe to send back to the client.
var (
	ErrNoSignature      = errors.New("request is not signed (no SDK-HMAC-SHA256 Authorization header)")
	ErrMalformed        = errors.New("malformed Authorization header")
	ErrUnknownAccessKey = errors.New("unknown access key")
	ErrBadDate          = errors.New("missing or malformed " + HeaderDate)
	ErrStale            = errors.New(HeaderDate + " is too far from the server clock")
	ErrBadSignature     = errors.New("signature does not match")
)

// DefaultMaxSkew is how far X-Sdk-Date may be from the verifier's clock, as
// the Huawei Cloud API gateway allows.
const DefaultMaxSkew = 15 * time.Minute

// Verifier checks SDK-HMAC-SHA256 signatures on incoming requests.
type Verifier struct {
	// SecretKey returns the secret key of an access key, or false when the
	// access key is unknown.
	SecretKey func(accessKey string) ([]byte, bool)
	// MaxSkew bounds |X-Sdk-Date - now|; zero means DefaultMaxSkew.
	MaxSkew time.Duration
}

// Verify checks the signature of r, whose body has already been read into
// body, at time now. It returns the access key that signed the request.
//
// The signed headers must include x-sdk-date, and x-security-token when
// the request carries one, so neither can be replaced in transit.
func (v *Verifier) Verify(r *http.Request, body []byte, now time.Time) (string, error) {
	auth, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return "", err
	}
	if !slices.Contains(auth.signed, "x-sdk-date") {
		return "", fmt.Errorf("%w: x-sdk-date is not signed", ErrMalformed)
	}
	if r.Header.Get(HeaderSecurityToken) != "" && !slices.Contains(auth.signed, "x-security-token") {
		return "", fmt.Errorf("%w: x-security-token is not signed", ErrMalformed)
	}
	date := r.Header.Get(HeaderDate)
	t, err := time.Parse(DateFormat, date)
	if err != nil {
		return "", ErrBadDate
	}
	skew := v.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	if d := now.Sub(t); d > skew || d < -skew {
		return "", ErrStale
	}
	sk, ok := v.SecretKey(auth.accessKey)
	if !ok || len(sk) == 0 {
		return "", ErrUnknownAccessKey
	}
	if v := r.Header.Get(HeaderContentSHA256); v != "" {
		// The body carries key material and its binding: it is always
		// signed, and a stated hash must be the body's.
		sum := sha256.Sum256(body)
		if v != hex.EncodeToString(sum[:]) {
			return "", fmt.Errorf("%w: %s is not the SHA-256 of the body (unsigned payloads are refused)", ErrMalformed, HeaderContentSHA256)
		}
	}
	canonical, err := canonicalRequest(r, auth.signed, body)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	want := signature(sk, stringToSign(canonical, date))
	if !hmac.Equal([]byte(want), []byte(auth.signature)) {
		return "", ErrBadSignature
	}
	return auth.accessKey, nil
}

type authHeader struct {
	accessKey string
	signed    []string
	signature string
}

// parseAuthorization reads
// "SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex".
func parseAuthorization(h string) (*authHeader, error) {
	rest, ok := strings.CutPrefix(h, Algorithm+" ")
	if !ok {
		return nil, ErrNoSignature
	}
	a := &authHeader{}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return nil, ErrMalformed
		}
		seen[k] = true
		switch k {
		case "Access":
			a.accessKey = val
		case "SignedHeaders":
			a.signed = strings.Split(val, ";")
		case "Signature":
			a.signature = val
		default:
			return nil, ErrMalformed
		}
	}
	if a.accessKey == "" || len(a.signed) == 0 || len(a.signature) != 64 {
		return nil, ErrMalformed
	}
	names := map[string]bool{}
	for _, n := range a.signed {
		if n == "" || n != strings.ToLower(n) || names[n] {
			return nil, ErrMalformed
		}
		names[n] = true
	}
	return a, nil
}
