package huaweicloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
)

// ECS metadata paths. The token step is the metadata service's optional
// session protection: where it is enforced, securitykey needs the token.
// As the SDK does, a token answer of 404, 405 or 503 means carry on
// without one, and a securitykey answer of 401 that is not "no agency"
// means the token was missing or stale: fetch one, now required, and try
// once more.
const (
	metadataKeyPath   = "/openstack/latest/securitykey"
	metadataTokenPath = "/meta-data/latest/api/token"
	metadataTokenTTL  = 300 // seconds; one token per refresh is enough
	// metadataNoAgency is in the 401 answer of an ECS without an agency,
	// which a token does not fix.
	metadataNoAgency = "Please configure Cloud Service Agency first"
)

// Refresh policy for temporary credentials (one hour by default on ECS;
// the metadata service starts handing out the next one 10 minutes before
// expiry).
//
//   - A credential is used until expiryMargin before it expires, which
//     covers clock skew and the time a request spends in flight.
//   - It is refreshed once less than max(lifetime/3, refreshLeadMin) is left,
//     lifetime being what was left when it was fetched; when that lead is
//     the whole lifetime, halfway through. A one-hour credential is thus
//     refreshed 20 minutes before expiry; the service may hand back the
//     same one, whose shorter remaining lifetime then schedules the next
//     attempt about 6.7 minutes before expiry, by when it has rotated.
//   - Refreshes are at least refreshMinInterval apart; after a failure the
//     next attempt is refreshRetry later.
//   - One refresh runs at a time, in the background. Callers keep using
//     the current credential while it is usable, and wait only when there
//     is none. A failed refresh keeps the current credential while it is
//     usable.
const (
	expiryMargin       = time.Minute
	refreshLeadMin     = 5 * time.Minute
	refreshMinInterval = 10 * time.Second
	refreshRetry       = 15 * time.Second
	maxMetadataBody    = 64 << 10
)

// metadataCredentials fetches and refreshes temporary credentials from the
// ECS metadata service.
type metadataCredentials struct {
	endpoint string
	hc       *http.Client
	timeout  time.Duration
	now      func() time.Time

	mu        sync.Mutex
	cur       *credential
	refreshAt time.Time
	running   chan struct{} // closed when the refresh in progress ends
	lastErr   error
}

func (m *metadataCredentials) usable(c *credential, now time.Time) bool {
	return c != nil && now.Before(c.expires.Add(-expiryMargin))
}

// credentials returns the current credential while it is usable, starting
// a refresh in the background once one is due, and waits for a refresh
// only when there is no usable credential.
func (m *metadataCredentials) credentials(ctx context.Context) (*credential, error) {
	m.mu.Lock()
	now := m.now()
	if cur := m.cur; m.usable(cur, now) {
		if !now.Before(m.refreshAt) && m.running == nil {
			m.startRefresh(ctx)
		}
		m.mu.Unlock()
		return cur, nil
	}
	running := m.running
	if running == nil {
		running = m.startRefresh(ctx)
	}
	m.mu.Unlock()
	select {
	case <-running:
	case <-ctx.Done():
		return nil, &credError{kind: kmsclient.ErrUnavailable, msg: "waiting for ECS metadata credentials", err: ctx.Err()}
	}
	return m.current()
}

// startRefresh fetches a credential in the background; m.mu is held. The
// fetch does not end with the caller that started it, whose cancellation
// would otherwise fail every caller waiting for the same refresh; it is
// bounded by m.timeout instead.
func (m *metadataCredentials) startRefresh(ctx context.Context) chan struct{} {
	done := make(chan struct{})
	m.running = done
	go m.refresh(context.WithoutCancel(ctx), done)
	return done
}

func (m *metadataCredentials) refresh(ctx context.Context, done chan struct{}) {
	fresh, err := m.fetch(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if err == nil {
		// The previous credential may still be signing a request; it is
		// freed once nothing refers to it.
		m.cur, m.lastErr = fresh, nil
		m.refreshAt = nextRefresh(now, fresh.expires)
	} else {
		// A failed refresh keeps the current credential while it is
		// usable; the next attempt waits, unless there is none.
		m.lastErr = err
		m.refreshAt = now.Add(refreshRetry)
	}
	m.running = nil
	close(done)
}

// current returns the credential in hand, or why there is none.
func (m *metadataCredentials) current() (*credential, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.usable(m.cur, m.now()) {
		return m.cur, nil
	}
	if m.lastErr != nil {
		return nil, m.lastErr
	}
	return nil, &credError{kind: kmsclient.ErrUnavailable, msg: "no usable ECS metadata credentials"}
}

// nextRefresh schedules the refresh of a credential fetched at now.
func nextRefresh(now, expires time.Time) time.Time {
	life := expires.Sub(now)
	lead := max(life/3, refreshLeadMin)
	if lead >= life {
		lead = life / 2
	}
	return latest(expires.Add(-lead), now.Add(refreshMinInterval))
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// securityKeyResponse is the metadata answer. The SK is decoded without a
// string copy, like key material.
type securityKeyResponse struct {
	Credential struct {
		Access        string      `json:"access"`
		Secret        plainSecret `json:"secret"`
		SecurityToken string      `json:"securitytoken"`
		ExpiresAt     string      `json:"expires_at"`
	} `json:"credential"`
}

func (m *metadataCredentials) fetch(ctx context.Context) (*credential, error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	token, err := m.sessionToken(ctx, false)
	if err != nil {
		return nil, err
	}
	status, body, err := m.securityKey(ctx, token)
	if err != nil {
		return nil, err
	}
	if status == http.StatusUnauthorized && !bytes.Contains(body, []byte(metadataNoAgency)) {
		secret.Zero(body)
		if token, err = m.sessionToken(ctx, true); err != nil {
			return nil, err
		}
		if status, body, err = m.securityKey(ctx, token); err != nil {
			return nil, err
		}
	}
	defer secret.Zero(body)
	if status != http.StatusOK {
		return nil, metadataStatusError("securitykey", status, body)
	}
	var r securityKeyResponse
	err = json.Unmarshal(body, &r)
	sk := []byte(r.Credential.Secret)
	if err != nil {
		secret.Zero(sk)
		return nil, &credError{kind: kmsclient.ErrUnavailable, msg: "ECS metadata securitykey: malformed response"}
	}
	c := r.Credential
	expires, perr := parseExpiry(c.ExpiresAt)
	switch {
	case c.Access == "" || len(sk) == 0 || c.SecurityToken == "":
		perr = errors.New("access, secret or securitytoken missing")
	case perr == nil && !m.usable(&credential{expires: expires}, m.now()):
		// Expired, or too close to expiry to sign with: a wrong host clock
		// is the likely cause, and fetching again will not help.
		perr = fmt.Errorf("credential expires at %s, less than %v from now (is the host clock right?)", c.ExpiresAt, expiryMargin)
	}
	if perr != nil {
		secret.Zero(sk)
		return nil, &credError{kind: kmsclient.ErrUnavailable, msg: "ECS metadata securitykey: " + perr.Error()}
	}
	key, err := secret.FromBytes(sk)
	if err != nil {
		return nil, &credError{kind: kmsclient.ErrUnavailable, msg: "store ECS metadata credentials", err: err}
	}
	return &credential{
		creds:   signer.Credentials{AccessKey: c.Access, SecretKey: key.Bytes(), SecurityToken: c.SecurityToken},
		sk:      key,
		expires: expires,
	}, nil
}

// securityKey asks for the temporary credential, with token when not empty.
func (m *metadataCredentials) securityKey(ctx context.Context, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.endpoint+metadataKeyPath, nil)
	if err != nil {
		return 0, nil, &credError{kind: kmsclient.ErrInvalidRequest, msg: "ECS metadata request", err: err}
	}
	if token != "" {
		req.Header.Set("X-Metadata-Token", token)
	}
	return m.do(req)
}

// sessionToken asks for a metadata session token. Services that do not
// have the token step, or cannot hand one out now, answer 404, 405 or 503:
// then the caller goes on without one, unless a token is required because
// securitykey refused to answer without it.
func (m *metadataCredentials) sessionToken(ctx context.Context, required bool) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, m.endpoint+metadataTokenPath, nil)
	if err != nil {
		return "", &credError{kind: kmsclient.ErrInvalidRequest, msg: "ECS metadata request", err: err}
	}
	req.Header.Set("X-Metadata-Token-Ttl-Seconds", strconv.Itoa(metadataTokenTTL))
	status, body, err := m.do(req)
	if err != nil {
		return "", err
	}
	defer secret.Zero(body)
	switch {
	case status == http.StatusOK:
		return strings.TrimSpace(string(body)), nil
	case !required && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusServiceUnavailable):
		return "", nil
	default:
		return "", metadataStatusError("token", status, body)
	}
}

func (m *metadataCredentials) do(req *http.Request) (int, []byte, error) {
	resp, err := m.hc.Do(req)
	if err != nil {
		return 0, nil, &credError{kind: kmsclient.ErrUnavailable, msg: "ECS metadata service unreachable", err: err}
	}
	defer resp.Body.Close()
	body, err := secret.ReadAll(resp.Body, resp.ContentLength, maxMetadataBody)
	if err != nil {
		return 0, nil, &credError{kind: kmsclient.ErrUnavailable, msg: "ECS metadata response", err: err}
	}
	return resp.StatusCode, body, nil
}

// metadataStatusError reports a failed metadata step. 401, 403 and 404
// mean the ECS has no agency (or the service refuses it), which retrying
// will not fix.
func metadataStatusError(step string, status int, body []byte) error {
	kind := kmsclient.ErrUnavailable
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		kind = kmsclient.ErrAccessDenied
	case http.StatusTooManyRequests:
		kind = kmsclient.ErrThrottled
	}
	msg := fmt.Sprintf("ECS metadata %s: HTTP %d", step, status)
	// A short body is usually the reason; one that mentions credentials
	// might hold them, and is left out.
	if s := strings.TrimSpace(string(body)); s != "" && len(s) < 200 && !mentionsCredentials(s) {
		msg += ": " + redactHex(s)
	}
	if kind == kmsclient.ErrAccessDenied {
		msg += " (is an agency attached to this ECS?)"
	}
	return &credError{kind: kind, msg: msg}
}

func mentionsCredentials(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "secret") || strings.Contains(s, "securitytoken") || strings.Contains(s, "access")
}

// parseExpiry reads expires_at, which IAM writes as
// 2006-01-02T15:04:05.000000Z (UTC, microseconds).
func parseExpiry(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("expires_at %q is not a timestamp", s)
}

// plainSecret is a JSON string decoded into bytes without an intermediate
// Go string. Escapes are refused; an SK has none.
type plainSecret []byte

func (p *plainSecret) UnmarshalJSON(data []byte) error {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return errors.New("want a string")
	}
	in := data[1 : len(data)-1]
	for _, c := range in {
		if c == '\\' || c < 0x20 {
			return errors.New("unexpected escape")
		}
	}
	secret.Zero(*p)
	*p = append([]byte(nil), in...)
	return nil
}
