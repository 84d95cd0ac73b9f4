package worker

import (
	"errors"
	"fmt"
	"testing"

	"kmsagent/kmsclient"
)

// TestErrorCrossesPipe: an error the worker reports is rebuilt in the
// parent so that errors.Is finds the KMS sentinel it wrapped.
func TestErrorCrossesPipe(t *testing.T) {
	for _, sentinel := range []error{
		kmsclient.ErrKeyNotFound, kmsclient.ErrKeyDisabled, kmsclient.ErrKeyPendingDeletion,
		kmsclient.ErrAccessDenied, kmsclient.ErrThrottled, kmsclient.ErrUnavailable,
		kmsclient.ErrInvalidCiphertext, kmsclient.ErrInvalidRequest,
	} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			sent := fmt.Errorf("unwrap master key: %w", sentinel)
			got := roundTrip(t, sent)
			if !errors.Is(got, sentinel) {
				t.Fatalf("%v (code %q) does not match %v", got, got.Code, sentinel)
			}
			if got.Error() != sent.Error() {
				t.Fatalf("message %q, sent %q", got.Error(), sent.Error())
			}
		})
	}
	got := roundTrip(t, errors.New("disk\nfull"))
	if got.Code != CodeOther || got.Unwrap() != nil || got.Error() != "disk full" {
		t.Fatalf("plain error came back as %+v", got)
	}
}

func roundTrip(t *testing.T, err error) *Error {
	t.Helper()
	line := marshal(Message{Error: &Error{Code: CodeOf(err), Message: oneLine(err.Error())}})
	m, perr := ParseMessage(line)
	if perr != nil || m.Error == nil {
		t.Fatalf("parse %s: %v", line, perr)
	}
	return m.Error
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"step":"kms"}`))
	f.Add([]byte(`{"ready":true,"pid":12}`))
	f.Add([]byte(`{"error":{"code":"key_disabled","step":"kms","message":"key disabled"}}`))
	f.Add([]byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if m.Error != nil {
			_ = m.Error.Error()
			_ = errors.Unwrap(m.Error)
		}
	})
}
