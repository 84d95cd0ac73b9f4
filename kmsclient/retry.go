package kmsclient

import (
	"context"
	"math/rand/v2"
	"time"

	"kmsagent/agent/secret"
)

// RetryPolicy retries throttled and unavailable calls with exponential
// backoff and full jitter (sleep a random time in [0, min(MaxDelay,
// BaseDelay*2^attempt)]). It never retries errors that will fail the same
// way again, and it stops at MaxAttempts, after MaxElapsed, or when the
// context ends, whichever comes first.
type RetryPolicy struct {
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	MaxElapsed  time.Duration

	// sleep and jitter are replaced in tests.
	sleep  func(context.Context, time.Duration) error
	jitter func(max time.Duration) time.Duration
}

// DefaultRetry suits an unlock at boot: a KMS that is briefly throttled or
// unreachable gets about half a minute to come back.
var DefaultRetry = RetryPolicy{
	MaxAttempts: 6,
	BaseDelay:   200 * time.Millisecond,
	MaxDelay:    5 * time.Second,
	MaxElapsed:  30 * time.Second,
}

// Do calls fn until it succeeds, fails with an error that is not
// retryable, or the policy gives up; it returns fn's last error.
func (p RetryPolicy) Do(ctx context.Context, fn func(context.Context) error) error {
	start := time.Now()
	attempts := max(p.MaxAttempts, 1)
	sleep, jitter := p.sleep, p.jitter
	if sleep == nil {
		sleep = sleepCtx
	}
	if jitter == nil {
		jitter = fullJitter
	}
	var err error
	for attempt := 0; attempt < attempts; attempt++ {
		if err = fn(ctx); err == nil || !Retryable(err) {
			return err
		}
		if attempt == attempts-1 {
			break
		}
		d := jitter(p.backoff(attempt))
		if p.MaxElapsed > 0 && time.Since(start)+d > p.MaxElapsed {
			break
		}
		if serr := sleep(ctx, d); serr != nil {
			return err
		}
	}
	return err
}

func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.BaseDelay
	for i := 0; i < attempt && (p.MaxDelay <= 0 || d < p.MaxDelay); i++ {
		d *= 2
	}
	if p.MaxDelay > 0 && d > p.MaxDelay {
		d = p.MaxDelay
	}
	return d
}

func fullJitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WithRetry wraps k so that every call is retried under p.
func WithRetry(k KMS, p RetryPolicy) KMS {
	return &retrying{k: k, p: p}
}

type retrying struct {
	k KMS
	p RetryPolicy
}

func (r *retrying) Provider() string { return r.k.Provider() }

func (r *retrying) GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*DataKey, error) {
	var dk *DataKey
	err := r.p.Do(ctx, func(ctx context.Context) (err error) {
		dk, err = r.k.GenerateDataKey(ctx, keyID, size, binding)
		return err
	})
	return dk, err
}

func (r *retrying) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	var key *secret.Key
	err := r.p.Do(ctx, func(ctx context.Context) (err error) {
		key, err = r.k.Decrypt(ctx, keyID, wrapped, binding)
		return err
	})
	return key, err
}

func (r *retrying) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	var out []byte
	err := r.p.Do(ctx, func(ctx context.Context) (err error) {
		out, err = r.k.Encrypt(ctx, keyID, plaintext, binding)
		return err
	})
	return out, err
}

func (r *retrying) ReEncrypt(ctx context.Context, srcKeyID string, wrapped []byte, dstKeyID string, binding string) ([]byte, error) {
	var out []byte
	err := r.p.Do(ctx, func(ctx context.Context) (err error) {
		out, err = r.k.ReEncrypt(ctx, srcKeyID, wrapped, dstKeyID, binding)
		return err
	})
	return out, err
}

func (r *retrying) DescribeKey(ctx context.Context, keyID string) (*KeyInfo, error) {
	var info *KeyInfo
	err := r.p.Do(ctx, func(ctx context.Context) (err error) {
		info, err = r.k.DescribeKey(ctx, keyID)
		return err
	})
	return info, err
}
