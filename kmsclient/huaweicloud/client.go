// Package huaweicloud is the Huawei Cloud KMS provider: the KMS v1.0 REST
// API (create-datakey, encrypt-datakey, decrypt-datakey, describe-key),
// signed with SDK-HMAC-SHA256 using a static AK/SK or the temporary
// credentials of the ECS metadata service.
//
// The binding is sent as additional_authenticated_data, or as
// encryption_context {"binding": ...} for deployments that only have the
// older field.
//
// decrypt-datakey needs the length of the plaintext key, which the KMS
// ciphertext does not document, so wrapped keys are framed as
//
//	0x02 | data key length (uint16, big endian) | cipher_text
//
// where cipher_text is the hex text exactly as the service returned it,
// case included, and is sent back unchanged. Version 0x01 frames, which
// held the decoded bytes, are still read. Strip the first three bytes to
// hand a wrapped key to other Huawei tools.
//
// Key ids are checked before any request: the service takes only ids (a
// UUID in lower case) and answers KMS.0205 for anything else, aliases
// included, so an alias fails here, the same against kms serve as in
// production (ErrNotKeyID).
//
// Requests are what the official SDK sends: Content-Type
// application/json;charset=UTF-8, signed headers user-agent, x-project-id,
// x-sdk-date (and x-security-token), never host. Errors are read where
// the SDK reads them (error_code/error_msg or code/message, at the top
// level or nested) and keep the service's X-Request-Id. Without an
// endpoint, the region's comes from the SDK's region table (regions.go).
//
// The client does not retry; wrap it with kmsclient.WithRetry. It does not
// follow redirects either: a signed request goes to the configured
// endpoint or nowhere.
package huaweicloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
)

const (
	providerName = "huaweicloud"
	headerNonce  = "X-Sdk-Nonce"
	// maxResponse bounds a KMS response; the largest, describe-key, is
	// well under 4 KiB.
	maxResponse = 1 << 20
)

// Client talks to Huawei Cloud KMS. It is safe for concurrent use.
type Client struct {
	cfg   Config
	base  *url.URL
	hc    *http.Client
	creds credentialSource
	now   func() time.Time
}

var _ kmsclient.KMS = (*Client)(nil)

// New checks cfg and prepares a client. Static credentials are read from
// SecretKeyFile now; metadata credentials are fetched on first use, so a
// daemon can start before the metadata service answers.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg, base, err := cfg.check()
	if err != nil {
		return nil, err
	}
	hc, err := cfg.httpClient()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, base: base, hc: hc, now: time.Now}
	switch cfg.Credentials {
	case CredentialsStatic:
		sk, err := readSecretKeyFile(cfg.SecretKeyFile)
		if err != nil {
			return nil, err
		}
		c.creds = newStaticCredentials(cfg.AccessKey, sk)
	case CredentialsMetadata:
		mhc := c.hc
		if cfg.HTTPClient == nil {
			mhc = metadataHTTPClient()
		}
		c.creds = &metadataCredentials{
			endpoint: cfg.MetadataEndpoint,
			hc:       mhc,
			timeout:  cfg.Timeout,
			// One clock for signing dates and credential expiry.
			now: func() time.Time { return c.now() },
		}
	}
	return c, nil
}

// Provider is "huaweicloud".
func (c *Client) Provider() string { return providerName }

// userAgent names the client; it is signed, as the SDK signs its own.
const userAgent = "kmsagent-huaweicloud-kms/1"

// call signs and POSTs body to a KMS operation and returns the response
// body of a 2xx answer and the X-Request-Id the service gave the call. The
// caller zeroes the returned buffer.
//
// When wipe is set the body holds key material: call zeroes it once the
// transport is done with it, and does not let the transport replay it.
func (c *Client) call(parent context.Context, op, keyID, apiOp string, body []byte, wipe bool) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	handed := false
	if wipe {
		defer func() {
			if !handed {
				secret.Zero(body)
			}
		}()
	}
	cred, err := c.creds.credentials(ctx)
	if err != nil {
		return nil, "", c.credentialsError(op, keyID, err)
	}
	u := *c.base
	u.Path += wire.Path(c.cfg.ProjectID, apiOp)
	u.RawPath = ""
	var rd io.Reader = bytes.NewReader(body)
	if wipe {
		rd = &wipingBody{Reader: bytes.NewReader(body), buf: body}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), rd)
	if err != nil {
		return nil, "", c.fail(op, keyID, kmsclient.ErrInvalidRequest, "build request: %v", err)
	}
	if wipe {
		req.ContentLength = int64(len(body))
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(wire.HeaderProjectID, c.cfg.ProjectID)
	// Signed with the rest, it makes every request's signature unique, so
	// a server that refuses replayed signatures (kms serve does) accepts
	// the same call twice within the second of X-Sdk-Date, and a retry.
	req.Header.Set(headerNonce, rand.Text())
	err = signer.Sign(req, body, cred.creds, c.now())
	runtime.KeepAlive(cred) // cred.sk backs cred.creds.SecretKey
	if err != nil {
		return nil, "", c.fail(op, keyID, kmsclient.ErrInvalidRequest, "sign request: %v", err)
	}
	handed = true
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Message: c.timedOut(parent, ctx), Err: err}
	}
	defer resp.Body.Close()
	reqID := requestIDOf(resp.Header)
	out, err := secret.ReadAll(resp.Body, resp.ContentLength, maxResponse)
	if err != nil {
		msg := "read response"
		if t := c.timedOut(parent, ctx); t != "" {
			msg += ": " + t
		}
		return nil, "", &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Status: resp.StatusCode, Message: msg, Err: err, RequestID: reqID}
	}
	if resp.StatusCode/100 == 3 {
		secret.Zero(out)
		return nil, "", c.redirectError(op, keyID, resp, reqID)
	}
	if resp.StatusCode/100 != 2 {
		defer secret.Zero(out)
		return nil, "", responseError(op, keyID, resp.StatusCode, reqID, out)
	}
	return out, reqID, nil
}

// timedOut says that the KMS did not answer within the client's timeout
// when that is why ctx, the call's, ended rather than parent, the
// caller's; "" otherwise.
func (c *Client) timedOut(parent, ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && parent.Err() == nil {
		return fmt.Sprintf("no answer within %v", c.cfg.Timeout)
	}
	return ""
}

func (c *Client) fail(op, keyID string, kind error, format string, args ...any) error {
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// badResponse reports a 2xx answer the client cannot use. It is counted as
// unavailability, which callers retry, rather than as a failure that
// stays: the KMS's API is stable, so an answer that is not the API's
// comes from something between (a proxy or load balancer mid-restart, a
// captive portal, a connection cut short) or from a server fault, all
// of which pass, and retrying costs one call per backoff step. What
// decides a volume for good (a wrong or disabled key, a damaged
// ciphertext) arrives as a well-formed error and is never retried.
func (c *Client) badResponse(op, keyID, reqID, format string, args ...any) error {
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Message: fmt.Sprintf("malformed KMS response: "+format, args...), RequestID: reqID}
}

// redirectError reports a redirect, which the client does not follow: it
// points at a misconfigured endpoint (http for https, a moved host), and a
// signed request carrying key material goes where the config says or
// nowhere.
func (c *Client) redirectError(op, keyID string, resp *http.Response, reqID string) error {
	msg := "the endpoint answered with a redirect, which is not followed; set endpoint to the KMS URL itself"
	if loc := resp.Header.Get("Location"); loc != "" {
		msg = fmt.Sprintf("the endpoint redirects to %s, which is not followed; set endpoint to the KMS URL itself", redactHex(loc))
	}
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrInvalidRequest, Status: resp.StatusCode, Message: msg, RequestID: reqID}
}

func (c *Client) credentialsError(op, keyID string, err error) error {
	var ce *credError
	if errors.As(err, &ce) {
		return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: ce.kind, Message: ce.msg, Err: ce.err}
	}
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Message: "credentials", Err: err}
}

// wipingBody zeroes a request body holding key material when the
// transport closes it, which it does once it has finished reading.
type wipingBody struct {
	*bytes.Reader
	buf  []byte
	once sync.Once
}

func (b *wipingBody) Close() error {
	b.once.Do(func() { secret.Zero(b.buf) })
	return nil
}
