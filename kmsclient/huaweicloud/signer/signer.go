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
// value. Headers are signed by lower-case name: every header set when
// signing except Content-Type and names containing '_', which gateways on
// the way may rewrite or drop. Host is not signed, as the official SDK does
// not sign it: a proxy or gateway that rewrites Host must not break the
// signature. A request whose Content-Type is neither JSON nor BSON is
// signed with X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD in place of the body
// hash, as the SDK does for streamed uploads.
package signer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
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
	// HeaderContentSHA256, when set, is the body hash the signature uses
	// in place of hashing the body.
	HeaderContentSHA256 = "X-Sdk-Content-Sha256"
	// UnsignedPayload in HeaderContentSHA256 leaves the body unsigned.
	UnsignedPayload = "UNSIGNED-PAYLOAD"
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
// signed headers are every header already set on r that may be signed, so
// set User-Agent, X-Project-Id and the like before calling Sign.
func Sign(r *http.Request, body []byte, c Credentials, t time.Time) error {
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
	if ct, ok := r.Header["Content-Type"]; ok && len(ct) > 0 && !strings.Contains(ct[0], "application/json") && !strings.Contains(ct[0], "application/bson") {
		r.Header.Set(HeaderContentSHA256, UnsignedPayload)
	}
	names := signableHeaders(r.Header)
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
