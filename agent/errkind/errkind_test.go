package errkind

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"kmsagent/kmsclient"
)

func TestOf(t *testing.T) {
	gone := New(Gone, "mount gone")
	tests := []struct {
		err  error
		want string
	}{
		{nil, OK},
		{&kmsclient.Error{Kind: kmsclient.ErrKeyDisabled}, KeyDisabled},
		{&kmsclient.Error{Kind: kmsclient.ErrThrottled}, Throttled},
		// A KMS call that timed out is the KMS being unavailable, not
		// the caller's deadline.
		{&kmsclient.Error{Kind: kmsclient.ErrUnavailable, Err: context.DeadlineExceeded}, Unavailable},
		{fmt.Errorf("volume a: %w", &kmsclient.Error{Kind: kmsclient.ErrInvalidCiphertext}), InvalidCiphertext},
		{fmt.Errorf("volume a: %w: gone", gone), Gone},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), Timeout},
		{context.Canceled, Canceled},
		{errors.New("no such file"), Other},
	}
	for _, tt := range tests {
		if got := Of(tt.err); got != tt.want {
			t.Errorf("Of(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestRestored: an error read back from a state file has its kind, and
// errors.Is matches the sentinel the kind names, so the retry decision
// is the same after a restart; kinds written by an earlier daemon under
// other names read as today's.
func TestRestored(t *testing.T) {
	gone := New(Gone, "mount gone")
	tests := []struct {
		kind, want string
		is         error
	}{
		{Throttled, Throttled, kmsclient.ErrThrottled},
		{"unavailable", Unavailable, kmsclient.ErrUnavailable},
		{"throttled", Throttled, kmsclient.ErrThrottled},
		{KeyDisabled, KeyDisabled, kmsclient.ErrKeyDisabled},
		{Gone, Gone, gone},
		{Timeout, Timeout, context.DeadlineExceeded},
		{"other", Other, nil},
		{"", Other, nil},
	}
	for _, tt := range tests {
		err := Restored("the text", tt.kind)
		if err.Error() != "the text" || Of(err) != tt.want {
			t.Errorf("Restored(%q): %q of kind %q, want kind %q", tt.kind, err, Of(err), tt.want)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("Restored(%q) is not %v", tt.kind, tt.is)
		}
		if errors.Is(err, kmsclient.ErrKeyNotFound) {
			t.Errorf("Restored(%q) is key_not_found", tt.kind)
		}
	}
	if kmsclient.Retryable(Restored("x", KeyDisabled)) || !kmsclient.Retryable(Restored("x", Unavailable)) {
		t.Error("a restored error's retry decision differs from the original's")
	}
}
