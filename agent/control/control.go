// Package control is the daemon's control API: HTTP and JSON on a unix
// socket, and a client for it that `kmsagent status|mount|umount` use when
// the daemon runs.
//
// Who may do what is decided by the peer's credentials as the kernel
// recorded them at connect (SO_PEERCRED, SO_PEERGROUPS; agent/peercred):
// root and members of the admin group may mount, unmount and reload;
// anyone who can connect (the socket's mode decides that) may read the
// status, the health and the metrics. Nothing here sees key material: the
// daemon's answers carry key ids, never keys.
//
// Endpoints:
//
//	GET  /v1/status              {"status": "...", "volumes": [VolumeInfo...]}
//	GET  /v1/health              {"ok": true, "status": "..."}
//	POST /v1/mount   {name}      VolumeInfo
//	POST /v1/unmount {name|target, lazy}
//	POST /v1/reload              ReloadResult
//	GET  /metrics                Prometheus text format
//
// Errors are {"error": {"code": CODE, "message": ONE LINE}} with an HTTP
// status that follows the code; the client turns them back into errors
// that errors.Is matches against the sentinels of kmsclient, daemon and
// this package.
package control

import (
	"context"
	"errors"
	"net/http"

	"kmsagent/agent/daemon"
	"kmsagent/agent/errkind"
	"kmsagent/kmsclient"
)

// Daemon is what the control API serves; *daemon.Daemon implements it.
type Daemon interface {
	Status(ctx context.Context) ([]daemon.VolumeInfo, error)
	StatusLine() string
	Mount(ctx context.Context, name, actor string) (daemon.VolumeInfo, error)
	Unmount(ctx context.Context, nameOrTarget string, lazy bool, actor string) error
	Reload(ctx context.Context, actor string) (daemon.ReloadResult, error)
}

// Errors of this package, for errors.Is.
var (
	ErrForbidden  = errors.New("permission denied")
	ErrBadRequest = errors.New("bad request")
	ErrBadConfig  = errors.New("configuration not loaded")
	ErrNotRunning = errors.New("kmsagent daemon is not running")
)

// StatusReply is the answer of GET /v1/status.
type StatusReply struct {
	Status  string              `json:"status"`
	Volumes []daemon.VolumeInfo `json:"volumes"`
}

// Health is the answer of GET /v1/health.
type Health struct {
	OK     bool   `json:"ok"`
	Status string `json:"status"`
}

// MountRequest is the body of POST /v1/mount.
type MountRequest struct {
	Name string `json:"name"`
}

// UnmountRequest is the body of POST /v1/unmount: a volume's name or a
// mount point, not both.
type UnmountRequest struct {
	Name   string `json:"name,omitempty"`
	Target string `json:"target,omitempty"`
	Lazy   bool   `json:"lazy,omitempty"`
}

// Error is an error answer of the API.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is matches the sentinel the code stands for.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// sentinels maps the codes to errors. A code is the error's kind in
// errkind's vocabulary (the status's error_kind, the metrics' and the
// audit log's word for it), or one of the API's own above.
var sentinels = map[string]error{
	"forbidden":                ErrForbidden,
	"bad_request":              ErrBadRequest,
	"bad_config":               ErrBadConfig,
	errkind.NotFound:           daemon.ErrNotFound,
	errkind.Stopping:           daemon.ErrStopping,
	errkind.Throttled:          kmsclient.ErrThrottled,
	errkind.Unavailable:        kmsclient.ErrUnavailable,
	errkind.KeyDisabled:        kmsclient.ErrKeyDisabled,
	errkind.KeyPendingDeletion: kmsclient.ErrKeyPendingDeletion,
	errkind.KeyNotFound:        kmsclient.ErrKeyNotFound,
	errkind.AccessDenied:       kmsclient.ErrAccessDenied,
	errkind.InvalidCiphertext:  kmsclient.ErrInvalidCiphertext,
	errkind.InvalidRequest:     kmsclient.ErrInvalidRequest,
	"throttled":                kmsclient.ErrThrottled,   // from an older daemon
	"unavailable":              kmsclient.ErrUnavailable, // from an older daemon
}

// statusOf is the HTTP status of an error code.
func statusOf(code string) int {
	switch code {
	case "forbidden":
		return http.StatusForbidden
	case "bad_request":
		return http.StatusBadRequest
	case errkind.NotFound:
		return http.StatusNotFound
	case "bad_config":
		return http.StatusUnprocessableEntity
	case errkind.Throttled, errkind.Unavailable, errkind.Stopping:
		return http.StatusServiceUnavailable
	case errkind.KeyDisabled, errkind.KeyPendingDeletion, errkind.KeyNotFound, errkind.AccessDenied, errkind.InvalidCiphertext, errkind.InvalidRequest:
		// The KMS refused: an upstream answer, not the daemon's fault.
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// toError turns an error of the daemon into the API's.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := errkind.Of(err)
	if code == errkind.Other || code == errkind.Canceled || code == errkind.Timeout {
		code = "internal"
	}
	return &Error{Status: statusOf(code), Code: code, Message: oneLine(err.Error())}
}

func oneLine(s string) string {
	for i, c := range s {
		if c == '\n' || c == '\r' {
			return s[:i]
		}
	}
	return s
}

// Types of the answers, named here so the CLI needs only this package.
type (
	VolumeInfo   = daemon.VolumeInfo
	ReloadResult = daemon.ReloadResult
)
