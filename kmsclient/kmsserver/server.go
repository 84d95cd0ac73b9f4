// Package kmsserver serves a KMS backend (the embedded local store) over
// HTTP with the Huawei Cloud KMS v1.0 paths and JSON shapes, so that one
// small KMS can serve several hosts and the huaweicloud client can be
// exercised end to end.
//
// Served: POST /v1.0/{project_id}/kms/{create-datakey,
// create-datakey-without-plaintext, encrypt-datakey, decrypt-datakey,
// describe-key}. Requests are verified with SDK-HMAC-SHA256 when an access
// key is configured. Errors use the KMS codes and the
// {"error":{"error_code","error_msg"}} body.
//
// The binding is taken from additional_authenticated_data or from
// encryption_context. A context holding only {"binding": B} binds to B,
// the same as additional_authenticated_data B, so clients may switch
// between the two; any other context binds to its canonical JSON.
package kmsserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/secret"
)

// Backend is the KMS behind the server; *local.Store satisfies it.
type Backend interface {
	GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error)
	Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error)
	Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error)
	DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error)
}

// Options configure the server.
type Options struct {
	AccessKey string // when set, every request must carry a valid SDK-HMAC-SHA256 signature with this AK
	SecretKey []byte // the SK of AccessKey; the server keeps a reference
	ProjectID string // when set, the {project_id} in the path must match
	// Logger gets one line per request: method, path, op, key id, status,
	// duration, remote; never key material. Nil discards.
	Logger  *slog.Logger
	Now     func() time.Time // clock for X-Sdk-Date checks; tests
	MaxBody int64            // default 64 KiB
}

// DefaultMaxBody bounds request bodies; the largest legitimate one, an
// encrypt-datakey of a 1024-byte key, is under 3 KiB.
const DefaultMaxBody = 64 << 10

type server struct {
	store    Backend
	opts     Options
	verifier *signer.Verifier
	log      *slog.Logger
	ops      map[string]opFunc
}

// opFunc runs one operation on a verified, size-checked body. It writes the
// response and returns the status for the log.
type opFunc func(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int

// record is what the request log line says about a request.
type record struct {
	op, keyID, code, msg string
}

// New returns the HTTP handler serving store.
func New(store Backend, opts Options) http.Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	s := &server{store: store, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.AccessKey != "" {
		s.verifier = &signer.Verifier{SecretKey: func(ak string) ([]byte, bool) {
			return opts.SecretKey, ak == opts.AccessKey
		}}
	}
	s.ops = map[string]opFunc{
		wire.OpCreateDataKey:            s.createDataKey(true),
		wire.OpCreateDataKeyNoPlaintext: s.createDataKey(false),
		wire.OpEncryptDataKey:           s.encryptDataKey,
		wire.OpDecryptDataKey:           s.decryptDataKey,
		wire.OpDescribeKey:              s.describeKey,
	}
	return withRequestID(s)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &record{}
	status := s.serve(w, r, rec)
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("op", rec.op),
		slog.String("key_id", rec.keyID),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", r.RemoteAddr),
		slog.String("request_id", requestID(r.Context())),
	}
	level := slog.LevelInfo
	if rec.code != "" {
		attrs = append(attrs, slog.String("error_code", rec.code), slog.String("error", rec.msg))
		if status >= 500 {
			level = slog.LevelError
		}
	}
	s.log.LogAttrs(r.Context(), level, "kms request", attrs...)
}

func (s *server) serve(w http.ResponseWriter, r *http.Request, rec *record) int {
	project, op, ok := splitPath(r.URL.Path)
	run := s.ops[op]
	if !ok || run == nil {
		return fail(w, rec, http.StatusNotFound, wire.CodeBadURL, "no such KMS API")
	}
	rec.op = op
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail(w, rec, http.StatusMethodNotAllowed, wire.CodeBadURL, "method not allowed; KMS APIs take POST")
	}
	body, err := secret.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody), r.ContentLength, s.opts.MaxBody)
	if err != nil {
		if isTooLarge(err) {
			return fail(w, rec, http.StatusBadRequest, wire.CodeTooLong, "request body larger than the server allows")
		}
		return fail(w, rec, http.StatusBadRequest, wire.CodeBadJSON, "reading the request body failed")
	}
	defer secret.Zero(body)
	if s.verifier != nil {
		if _, err := s.verifier.Verify(r, body, s.opts.Now()); err != nil {
			return fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth, "incorrect IAM authentication information: "+err.Error())
		}
	}
	if s.opts.ProjectID != "" && project != s.opts.ProjectID {
		return fail(w, rec, http.StatusForbidden, wire.CodeBadProject, "project id in the path is not served here")
	}
	if h := r.Header.Get(wire.HeaderProjectID); h != "" && h != project {
		return fail(w, rec, http.StatusForbidden, wire.CodeBadProject, "X-Project-Id does not match the project id in the path")
	}
	return run(r.Context(), w, body, rec)
}

// splitPath parses /v1.0/{project_id}/kms/{op}.
func splitPath(p string) (project, op string, ok bool) {
	parts := strings.Split(p, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "v1.0" || parts[2] == "" || parts[3] != "kms" {
		return "", "", false
	}
	return parts[2], parts[4], true
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe) || errors.Is(err, secret.ErrTooLarge)
}
