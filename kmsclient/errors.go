package kmsclient

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds. Providers return an *Error whose Kind is one of these, so
// callers test with errors.Is(err, kmsclient.ErrKeyDisabled).
var (
	ErrKeyNotFound        = errors.New("key not found")
	ErrKeyDisabled        = errors.New("key disabled")
	ErrKeyPendingDeletion = errors.New("key pending deletion")
	ErrAccessDenied       = errors.New("access denied")
	ErrThrottled          = errors.New("throttled")
	ErrUnavailable        = errors.New("kms unavailable")
	ErrInvalidCiphertext  = errors.New("invalid ciphertext")
	ErrInvalidRequest     = errors.New("invalid request")
)

// hints tell an admin what to do about each kind of failure.
var hints = map[error]string{
	ErrKeyNotFound:        "check the key id or alias",
	ErrKeyDisabled:        "enable the key",
	ErrKeyPendingDeletion: "cancel the scheduled deletion",
	ErrAccessDenied:       "check the credentials and the key policy in the [kms] config",
	ErrThrottled:          "the KMS is rate limiting; retry later or lower the request rate",
	ErrUnavailable:        "check network access to the KMS endpoint and its status",
	ErrInvalidCiphertext:  "the wrapped key is damaged, belongs to another volume or to another key",
	ErrInvalidRequest:     "check the arguments and the [kms] config",
}

// Error is a failed KMS call. It never contains key material.
type Error struct {
	Provider string // "local", "huaweicloud", "aws"
	Op       string // "decrypt", "generate-data-key", ...
	KeyID    string // the CMK involved, when known
	Kind     error  // one of the Err* values above
	Code     string // provider's error code, e.g. "KMS.0207", "DisabledException"
	Status   int    // HTTP status, when there was one
	Message  string // provider's message, trimmed to one line
	Err      error  // underlying cause (network error, ...), may be nil
	// RequestID is the id the KMS gave the request (X-Request-Id), which
	// its operator needs to find the call in their logs.
	RequestID string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s kms %s", e.Provider, e.Op)
	if e.KeyID != "" {
		fmt.Fprintf(&b, " (key %s)", e.KeyID)
	}
	fmt.Fprintf(&b, ": %v", e.Kind)
	var detail []string
	if e.Code != "" {
		detail = append(detail, e.Code)
	}
	if e.Status != 0 {
		detail = append(detail, fmt.Sprintf("HTTP %d", e.Status))
	}
	if m := oneLine(e.Message); m != "" {
		detail = append(detail, m)
	}
	if e.Err != nil {
		detail = append(detail, oneLine(e.Err.Error()))
	}
	if e.RequestID != "" {
		detail = append(detail, "request id "+oneLine(e.RequestID))
	}
	if len(detail) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(detail, ": "))
	}
	if h := hints[e.Kind]; h != "" {
		fmt.Fprintf(&b, "; %s", h)
	}
	return b.String()
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// Retryable reports whether err is worth retrying: throttling and
// unavailability are transient, everything else (a wrong key, a damaged
// ciphertext, a denied request) will fail the same way again.
func Retryable(err error) bool {
	return errors.Is(err, ErrThrottled) || errors.Is(err, ErrUnavailable)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
