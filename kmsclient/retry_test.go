package kmsclient

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func kindErr(kind error) error { return &Error{Provider: "test", Op: "decrypt", Kind: kind} }

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name      string
		errs      []error // returned by successive calls; nil after the list
		attempts  int
		wantCalls int
		wantKind  error
	}{
		{"success", nil, 5, 1, nil},
		{"throttled-then-ok", []error{kindErr(ErrThrottled), kindErr(ErrThrottled)}, 5, 3, nil},
		{"unavailable-then-ok", []error{kindErr(ErrUnavailable)}, 5, 2, nil},
		{"gives-up", []error{kindErr(ErrUnavailable), kindErr(ErrUnavailable), kindErr(ErrUnavailable)}, 3, 3, ErrUnavailable},
		{"not-found-not-retried", []error{kindErr(ErrKeyNotFound)}, 5, 1, ErrKeyNotFound},
		{"bad-ciphertext-not-retried", []error{kindErr(ErrInvalidCiphertext)}, 5, 1, ErrInvalidCiphertext},
		{"denied-not-retried", []error{kindErr(ErrAccessDenied)}, 5, 1, ErrAccessDenied},
		{"disabled-not-retried", []error{kindErr(ErrKeyDisabled)}, 5, 1, ErrKeyDisabled},
		{"plain-error-not-retried", []error{errors.New("boom")}, 5, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var slept []time.Duration
			p := RetryPolicy{MaxAttempts: tc.attempts, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second,
				sleep:  func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
				jitter: func(max time.Duration) time.Duration { return max },
			}
			calls := 0
			err := p.Do(context.Background(), func(context.Context) error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tc.wantCalls)
			}
			if tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
				t.Errorf("err = %v, want %v", err, tc.wantKind)
			}
			if len(slept) != max(tc.wantCalls-1, 0) {
				t.Errorf("slept %d times for %d calls", len(slept), calls)
			}
			for i, d := range slept {
				want := min(100*time.Millisecond<<i, time.Second)
				if d != want {
					t.Errorf("sleep %d = %v, want %v", i, d, want)
				}
			}
		})
	}
}

// TestRetryHonoursContextAndElapsed runs the real sleeps on synctest's
// fake clock, so the count of calls that fit in MaxElapsed is exact.
func TestRetryHonoursContextAndElapsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		p := RetryPolicy{MaxAttempts: 100, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
		err := p.Do(ctx, func(context.Context) error {
			calls++
			if calls == 3 {
				cancel()
			}
			return kindErr(ErrUnavailable)
		})
		if calls != 3 || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("after cancel: calls %d, err %v", calls, err)
		}

		// Calls at 0, 20 and 40 ms; a fourth, at 60 ms, would be past
		// MaxElapsed.
		calls = 0
		p = RetryPolicy{MaxAttempts: 100, BaseDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond, MaxElapsed: 50 * time.Millisecond,
			jitter: func(max time.Duration) time.Duration { return max }}
		start := time.Now()
		p.Do(context.Background(), func(context.Context) error { calls++; return kindErr(ErrThrottled) })
		if calls != 3 || time.Since(start) != 40*time.Millisecond {
			t.Fatalf("MaxElapsed 50ms with 20ms delays allowed %d calls in %v, want 3 in 40ms", calls, time.Since(start))
		}
	})
}

func TestFullJitterBounds(t *testing.T) {
	for i := 0; i < 1000; i++ {
		if d := fullJitter(10 * time.Millisecond); d < 0 || d > 10*time.Millisecond {
			t.Fatalf("jitter %v out of [0, 10ms]", d)
		}
	}
	if fullJitter(0) != 0 {
		t.Fatal("jitter of 0")
	}
}

func TestErrorMessage(t *testing.T) {
	err := &Error{Provider: "huaweicloud", Op: "decrypt", KeyID: "k1", Kind: ErrKeyDisabled, Code: "KMS.0209", Status: 400, Message: "key disabled\nsecond line"}
	got := err.Error()
	want := "huaweicloud kms decrypt (key k1): key disabled (KMS.0209: HTTP 400: key disabled); enable the key"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	wrapped := fmt.Errorf("mount /srv: %w", err)
	if !errors.Is(wrapped, ErrKeyDisabled) || Retryable(wrapped) {
		t.Fatal("kind lost through wrapping")
	}
	cause := errors.New("dial tcp: refused")
	if !errors.Is(&Error{Kind: ErrUnavailable, Err: cause}, cause) {
		t.Fatal("cause not exposed")
	}
}
