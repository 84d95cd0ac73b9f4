package kmsserver

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// clientState is one authenticated client: its secret, its CMKs and its
// request budget.
type clientState struct {
	name      string // access key, or uid=0
	secretKey []byte
	keys      []string
	limiter   *tokenBucket
}

func newClientState(name string, sk []byte, keys []string, opts Options) *clientState {
	return &clientState{
		name:      name,
		secretKey: sk,
		keys:      keys,
		limiter:   newTokenBucket(opts.RequestsPerSecond, opts.Burst, opts.Now()),
	}
}

type clientKey struct{}

func withClient(ctx context.Context, c *clientState) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// policyBackend enforces the key list of the request's client on every
// backend call. The check sits here, where the operations hand over the
// key id they act on, so no request field parsed twice can disagree
// with it.
type policyBackend struct {
	Backend
}

// permit returns an ErrAccessDenied error unless the client of ctx may use
// keyID. A listed id or alias matches the key by either name; a key the
// client may not see is refused the same way whether it exists or not.
func (p *policyBackend) permit(ctx context.Context, keyID string) error {
	c, _ := ctx.Value(clientKey{}).(*clientState)
	if c == nil {
		return &kmsclient.Error{Op: "authorize", KeyID: keyID, Kind: kmsclient.ErrAccessDenied, Message: "request has no authenticated client"}
	}
	if slices.Contains(c.keys, AllKeys) || slices.Contains(c.keys, keyID) {
		return nil
	}
	if info, err := p.Backend.DescribeKey(ctx, keyID); err == nil &&
		(slices.Contains(c.keys, info.ID) || info.Alias != "" && slices.Contains(c.keys, info.Alias)) {
		return nil
	}
	return &kmsclient.Error{Op: "authorize", KeyID: keyID, Kind: kmsclient.ErrAccessDenied,
		Message: fmt.Sprintf("access key %s may not use key %s", c.name, keyID)}
}

func (p *policyBackend) GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error) {
	if err := p.permit(ctx, keyID); err != nil {
		return nil, err
	}
	return p.Backend.GenerateDataKey(ctx, keyID, size, binding)
}

func (p *policyBackend) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	if err := p.permit(ctx, keyID); err != nil {
		return nil, err
	}
	return p.Backend.Encrypt(ctx, keyID, plaintext, binding)
}

func (p *policyBackend) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	if err := p.permit(ctx, keyID); err != nil {
		return nil, err
	}
	return p.Backend.Decrypt(ctx, keyID, wrapped, binding)
}

func (p *policyBackend) DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error) {
	if err := p.permit(ctx, keyID); err != nil {
		return nil, err
	}
	return p.Backend.DescribeKey(ctx, keyID)
}

// tokenBucket is a request rate limit: rate tokens a second, up to burst.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes a token if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
