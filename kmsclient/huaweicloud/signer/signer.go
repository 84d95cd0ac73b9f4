// Package signer implements the Huawei Cloud API gateway request signature
// SDK-HMAC-SHA256 (AK/SK): Sign for clients and Verifier for servers.
//
// The signature is an HMAC-SHA256, keyed with the secret key, over
//
//	SDK-HMAC-SHA256 \n X-Sdk-Date \n hex(SHA-256(canonical request))
//
// where the canonical request is
//
//	method \n canonical URI \n canonical query \n canonical headers \n
//	signed header names \n hex(SHA-256(body))
//
// The canonical URI is the path with every segment percent-encoded and a
// trailing '/' added for signing only. The query is sorted by name, then by
// value. Headers are signed by lower-case name; Content-Type and names
// containing '_' are never signed, because gateways on the way may rewrite
// or drop them.
package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
)

const (
	// Algorithm names the scheme in the Authorization header.
	Algorithm = "SDK-HMAC-SHA256"
	// HeaderDate carries the signing time in DateFormat, always UTC.
	HeaderDate = "X-Sdk-Date"
	// HeaderSecurityToken carries the session token of temporary
	// credentials; it is signed like any other header.
	HeaderSecurityToken = "X-Security-Token"
	// DateFormat is the layout of HeaderDate.
	DateFormat = "20060102T150405Z"
)

// Credentials sign requests. SecurityToken is set only for temporary
// credentials (ECS metadata, IAM security tokens).
type Credentials struct {
	AccessKey     string
	SecretKey     []byte
	SecurityToken string
}

// Sign sets X-Sdk-Date, X-Security-Token (for temporary credentials) and
// Authorization on r. body must be exactly the bytes r will send. The
// signed headers are host plus every header already set on r that may be
// signed, so set X-Project-Id and the like before calling Sign.
func Sign(r *http.Request, body []byte, c Credentials, t time.Time) error {
	return sign(r, body, c, t, true)
}

// sign exists so the published vectors, which do not sign host, can run
// through the same code as real requests.
func sign(r *http.Request, body []byte, c Credentials, t time.Time, withHost bool) error {
	if c.AccessKey == "" || len(c.SecretKey) == 0 {
		return errors.New("signer: access key and secret key are required")
	}
	if r.URL == nil {
		return errors.New("signer: request has no URL")
	}
	r.Header.Del("Authorization")
	date := t.UTC().Format(DateFormat)
	r.Header.Set(HeaderDate, date)
	if c.SecurityToken != "" {
		r.Header.Set(HeaderSecurityToken, c.SecurityToken)
	}
	names := signableHeaders(r.Header)
	if withHost {
		names = insertSorted(names, "host")
	}
	canonical, err := canonicalRequest(r, names, body)
	if err != nil {
		return err
	}
	sig := signature(c.SecretKey, stringToSign(canonical, date))
	r.Header.Set("Authorization", authorization(c.AccessKey, names, sig))
	return nil
}

// stringToSign hashes the canonical request under the algorithm and date.
func stringToSign(canonical, date string) string {
	sum := sha256.Sum256([]byte(canonical))
	return Algorithm + "\n" + date + "\n" + hex.EncodeToString(sum[:])
}

func signature(secretKey []byte, sts string) string {
	m := hmac.New(sha256.New, secretKey)
	m.Write([]byte(sts))
	return hex.EncodeToString(m.Sum(nil))
}

func authorization(accessKey string, signed []string, sig string) string {
	return Algorithm + " Access=" + accessKey + ", SignedHeaders=" + strings.Join(signed, ";") + ", Signature=" + sig
}

func insertSorted(names []string, name string) []string {
	i, found := slices.BinarySearch(names, name)
	if found {
		return names
	}
	return slices.Insert(names, i, name)
}
