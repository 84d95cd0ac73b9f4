// Package worker runs the processes that hold keys: the share (FUSE)
// worker, which lives as long as its mount, and the block unlock worker,
// which lives for one table load. Both are the kmsagent binary re-executed
// with a hidden command, so a key never enters the process that started
// them (the CLI or the long-lived daemon), and a crash of one mount
// cannot take down another.
//
// A worker is an owned child. It reports to its parent over a pipe on fd
// 3, one JSON object a line:
//
//	{"step":"kms"}                      starting a step (optional)
//	{"warning":"memory not locked..."}   carrying on regardless (optional)
//	{"ready":true,"pid":1234}            done: mounted, or table loaded
//	{"error":{"code":"key_disabled","step":"kms","message":"..."}}
//
// The crypttab key worker also names the master key it used
// ({"step":"deliver","cmk":{"provider":"local","key_id":"..."}}) and then
// waits for its parent's go-ahead on fd 5 before it writes the key to the
// connection on fd 4, so that the key use is audited before the key
// leaves.
//
// The error code is stable and names a sentinel (of kmsclient, or of the
// block volume code) where there is one, so the parent rebuilds an error that errors.Is matches
// (kmsclient.ErrKeyDisabled, ...) although only text crossed the pipe:
// the CLI's exit codes and the daemon's retry decisions work the same
// for a worker's failure as for an in-process one.
//
// The parent watches its child through a pidfd (Go's os.Process holds one
// on Linux); a process that is not its child (a worker adopted after a
// daemon restart, the reaper's worker) is watched with Watch, which polls
// a pidfd, instead of inferring death from a lock file.
package worker

import (
	"encoding/json"
	"errors"

	"kmsagent/agent/errkind"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Message is one line of the status pipe.
type Message struct {
	Step    string `json:"step,omitempty"`
	Warning string `json:"warning,omitempty"`
	Ready   bool   `json:"ready,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Error   *Error `json:"error,omitempty"`
	// CMK names the master key that unwrapped (or failed to unwrap) a
	// key, for the parent's audit record.
	CMK *CMK `json:"cmk,omitempty"`
	// Result is what a service worker did, with ready or an error (a
	// JSON value its parent knows the type of).
	Result json.RawMessage `json:"result,omitempty"`
}

// CMK is a master key as a worker reports it.
type CMK struct {
	Provider string `json:"provider,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
}

// Error is a worker's failure as its parent sees it. It unwraps to the
// kmsclient sentinel its Code names, if any.
type Error struct {
	Code Code `json:"code"`
	// Kind is the error's errkind word, so the parent's status,
	// metrics and retry decisions name the failure as the worker did.
	Kind    string `json:"kind,omitempty"`
	Step    string `json:"step,omitempty"` // the step that failed, when the worker knows
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Unwrap gives the sentinel of the code, so errors.Is works across the
// pipe, and the kind the worker named, so errkind.Of does.
func (e *Error) Unwrap() []error {
	var out []error
	for _, c := range codes {
		if c.code == e.Code {
			out = append(out, c.err)
			break
		}
	}
	if e.Kind != "" && e.Kind != errkind.Other {
		out = append(out, errkind.Restored(e.Message, e.Kind))
	}
	return out
}

// Code classifies a worker's error. The values are part of the protocol
// (a newer parent may talk to an older worker during an upgrade): add,
// never rename.
type Code string

const (
	CodeOther              Code = "other"
	CodeKeyNotFound        Code = "key_not_found"
	CodeKeyDisabled        Code = "key_disabled"
	CodeKeyPendingDeletion Code = "key_pending_deletion"
	CodeAccessDenied       Code = "access_denied"
	CodeThrottled          Code = "throttled"
	CodeUnavailable        Code = "unavailable"
	CodeInvalidCiphertext  Code = "invalid_ciphertext"
	CodeInvalidRequest     Code = "invalid_request"
	CodeNotEnrolled        Code = "not_enrolled" // a LUKS volume without a kmsagent token
	CodeWrongVolume        Code = "wrong_volume" // a token bound to another volume
	CodeAlreadyOpen        Code = "already_open" // a LUKS volume mapped already
)

// codes pairs each code with its sentinel, most specific first.
var codes = []struct {
	code Code
	err  error
}{
	{CodeKeyNotFound, kmsclient.ErrKeyNotFound},
	{CodeKeyDisabled, kmsclient.ErrKeyDisabled},
	{CodeKeyPendingDeletion, kmsclient.ErrKeyPendingDeletion},
	{CodeAccessDenied, kmsclient.ErrAccessDenied},
	{CodeThrottled, kmsclient.ErrThrottled},
	{CodeUnavailable, kmsclient.ErrUnavailable},
	{CodeInvalidCiphertext, kmsclient.ErrInvalidCiphertext},
	{CodeInvalidRequest, kmsclient.ErrInvalidRequest},
	{CodeNotEnrolled, volume.ErrNotEnrolled},
	{CodeWrongVolume, volume.ErrWrongVolume},
	{CodeAlreadyOpen, crypt.ErrAlreadyOpen},
}

// CodeOf classifies err.
func CodeOf(err error) Code {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeOther
}

// ParseMessage decodes one status line.
func ParseMessage(line []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(line, &m); err != nil {
		return Message{}, err
	}
	return m, nil
}
