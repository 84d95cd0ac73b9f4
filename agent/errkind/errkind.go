// Package errkind is the one vocabulary of error kinds the agent reports:
// the status's error_kind, the kmsagent_errors_total metric's label, the
// audit log's result and the control API's error code all say the same
// word for the same failure, so an alert written against one matches the
// others.
//
// The words are stable (alerting rules and state files hold them): add,
// never rename. A kind is found by errors.Is, KMS kinds first (an
// unavailable KMS error may wrap the context error that caused it), then
// the agent's own sentinels made with New, then the context's, then
// Other.
package errkind

import (
	"context"
	"errors"

	"kmsagent/kmsclient"
)

// The kinds.
const (
	OK = "ok" // no error (the audit log's result of a success)

	// The KMS's answers; see kmsclient's sentinels.
	KeyNotFound        = "key_not_found"
	KeyDisabled        = "key_disabled"
	KeyPendingDeletion = "key_pending_deletion"
	AccessDenied       = "access_denied"
	Throttled          = "kms_throttled"
	Unavailable        = "kms_unavailable" // unreachable, timed out, a server fault or an answer that is not the API's
	InvalidCiphertext  = "invalid_ciphertext"
	InvalidRequest     = "invalid_request"

	// The agent's own, from sentinels made with New.
	NotFound    = "not_found"    // no such volume in the configuration
	Stopping    = "stopping"     // the daemon is stopping
	Gone        = "gone"         // a mount went away behind the daemon's back
	Audit       = "audit"        // a key use the audit log could not record
	DiskRemoved = "disk_removed" // the disk under a volume was detached
	// DeviceMissing: a volume's source names no device present, such as
	// a cloud disk not attached yet (agent/source's ErrNotFound).
	DeviceMissing = "device_missing"

	Timeout  = "timeout"  // a deadline passed, not in a KMS call
	Canceled = "canceled" // the caller gave up
	Other    = "error"    // anything else
)

var kmsKinds = []struct {
	err  error
	kind string
}{
	{kmsclient.ErrKeyNotFound, KeyNotFound},
	{kmsclient.ErrKeyDisabled, KeyDisabled},
	{kmsclient.ErrKeyPendingDeletion, KeyPendingDeletion},
	{kmsclient.ErrAccessDenied, AccessDenied},
	{kmsclient.ErrThrottled, Throttled},
	{kmsclient.ErrUnavailable, Unavailable},
	{kmsclient.ErrInvalidCiphertext, InvalidCiphertext},
	{kmsclient.ErrInvalidRequest, InvalidRequest},
}

// Of is the kind of err: OK for nil.
func Of(err error) string {
	if err == nil {
		return OK
	}
	for _, k := range kmsKinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	var s *sentinel
	if errors.As(err, &s) {
		return s.kind
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Other
}

// New returns a sentinel error of kind, for errors.Is, whose kind Of
// finds however deeply it is wrapped.
func New(kind, msg string) error { return &sentinel{kind: kind, msg: msg} }

type sentinel struct{ kind, msg string }

func (s *sentinel) Error() string { return s.msg }

// Is matches any sentinel of the same kind: the one a restored error
// stands for is not the same value as the package's.
func (s *sentinel) Is(target error) bool {
	t, ok := target.(*sentinel)
	return ok && t.kind == s.kind
}

// Restored is an error read back from its text and kind (a state file):
// it reads as the text, and errors.Is matches the KMS sentinel or the
// context error its kind names, so decisions taken on the kind (retry or
// not) come out as before. Kinds this package no longer knows read as
// Other.
func Restored(msg, kind string) error {
	if k, ok := legacy[kind]; ok {
		kind = k
	}
	return &restored{msg: msg, kind: kind}
}

// legacy are kinds an earlier daemon wrote to its state file under
// other names.
var legacy = map[string]string{"throttled": Throttled, "unavailable": Unavailable, "other": Other}

type restored struct{ msg, kind string }

func (e *restored) Error() string { return e.msg }

// Unwrap gives the sentinel of the kind, so errors.Is and Of work.
func (e *restored) Unwrap() error {
	for _, k := range kmsKinds {
		if k.kind == e.kind {
			return k.err
		}
	}
	switch e.kind {
	case Timeout:
		return context.DeadlineExceeded
	case Canceled:
		return context.Canceled
	case Other, "":
		return nil
	}
	return &sentinel{kind: e.kind, msg: e.msg}
}
