// Package kmsserver serves a KMS backend (the embedded local store) over
// HTTP with the Huawei Cloud KMS v1.0 paths and JSON shapes, so that one
// small KMS can serve several hosts and the huaweicloud client can be
// exercised end to end.
//
// Served: POST /v1.0/{project_id}/kms/{create-datakey,
// create-datakey-without-plaintext, encrypt-datakey, decrypt-datakey,
// describe-key}. Errors use the KMS codes and the
// {"error":{"error_code","error_msg"}} body.
//
// Whoever can call decrypt-datakey with a volume's wrapped key and its
// (public) binding gets the key, so there is no unauthenticated mode:
//
//   - Every request carries an SDK-HMAC-SHA256 signature by one of the
//     configured clients (Options.Clients), except on a unix socket (see
//     below). Each client may use only the CMKs it lists; another key is
//     403 KMS.0306, so one host's credential does not unwrap another
//     host's keys. A signature is accepted once: a replay within the
//     clock-skew window is refused as a bad signature (the cache is
//     bounded; when full, new requests get 429 rather than old
//     signatures being forgotten). A request refused for its rate or
//     failed by the server (5xx) had no effect and is not remembered, so
//     its retry passes. X-Sdk-Date has one-second resolution, so a client
//     sending the same request twice in a second must sign something
//     that differs: the huaweicloud client signs a random X-Sdk-Nonce.
//   - A unix socket checks its peer with SO_PEERCRED: root, or a member of
//     Options.SocketGroup (primary group, or a supplementary group read
//     with SO_PEERGROUPS, which the kernel records at connect() like
//     SO_PEERCRED; nothing is looked up later by pid, so an exiting or
//     re-execing peer cannot swap in other credentials). Anyone else gets
//     403. Root may send unsigned requests and use every CMK: root owns
//     the key store's files anyway. Group members must sign like a remote
//     client, so their key lists apply.
//   - A TCP listener needs clients, and one on a non-loopback address
//     needs TLS (Server refuses to serve otherwise); TLS may require client
//     certificates as a second factor.
//
// Server bounds what one client can take: concurrent connections, header,
// body and idle timeouts, and a per-client request rate answered with 429
// APIGW.0308, which clients retry.
//
// The binding is taken from additional_authenticated_data or from
// encryption_context. A context holding only {"binding": B} binds to B,
// the same as additional_authenticated_data B, so clients may switch
// between the two; any other context binds to its canonical JSON.
package kmsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"kmsagent/agent/peercred"
	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// Backend is the KMS behind the server; *local.Store satisfies it.
type Backend interface {
	GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error)
	Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error)
	Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error)
	DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error)
}

// Client is one access key the server accepts.
type Client struct {
	AccessKey string
	SecretKey []byte // the SK of AccessKey; the server keeps a reference
	// Keys are the CMKs (ids or aliases) the client may use; AllKeys
	// ("*") allows every key.
	Keys []string
}

// AllKeys in Client.Keys lets a client use every CMK of the store.
const AllKeys = "*"

// Options configure the server.
type Options struct {
	// Clients are the access keys requests may be signed with.
	Clients   []Client
	ProjectID string // when set, the {project_id} in the path must match
	// SocketGroup is the group id whose members, besides root, may
	// connect to a unix socket; zero (root's group, which cannot be
	// chosen) or NoGroup for none.
	SocketGroup int
	// Logger gets one line per request: method, path, op, key id, client,
	// status, duration, remote; never key material. Nil discards.
	Logger  *slog.Logger
	Now     func() time.Time // clock for X-Sdk-Date checks; tests
	MaxBody int64            // default 64 KiB
	// MaxSkew bounds |X-Sdk-Date - now|, and so how long a signature is
	// remembered; default signer.DefaultMaxSkew, as Huawei's gateway.
	MaxSkew time.Duration
	// ReplayCache bounds the signatures remembered; default
	// DefaultReplayCache. When it is full, new requests get 429 until
	// signatures expire.
	ReplayCache int
	// RequestsPerSecond and Burst limit each client (access key, or root
	// on the socket); default DefaultRequestsPerSecond, DefaultBurst.
	RequestsPerSecond float64
	Burst             int
}

// Defaults.
const (
	DefaultMaxBody = 64 << 10 // the largest legitimate body, an encrypt-datakey of a 1024-byte key, is under 3 KiB
	// DefaultReplayCache holds 15 minutes of about 580 requests a second
	// in about 35 MB at most (BenchmarkReplayCacheMemory).
	DefaultReplayCache       = 1 << 19
	DefaultRequestsPerSecond = 50
	// DefaultBurst lets a host unlock a few hundred volumes at boot
	// without waiting.
	DefaultBurst = 500
)

// NoGroup is Options.SocketGroup when only root may use a unix socket.
const NoGroup = -1

type server struct {
	store    Backend // the policy-checking wrapper of the backend
	opts     Options
	clients  map[string]*clientState
	root     *clientState // unsigned requests of root on a unix socket
	verifier *signer.Verifier
	replay   *replayCache
	log      *slog.Logger
	ops      map[string]opFunc
}

// opFunc runs one operation on a verified, size-checked body. It writes the
// response and returns the status for the log.
type opFunc func(ctx context.Context, w http.ResponseWriter, body []byte, rec *record) int

// record is what the request log line says about a request.
type record struct {
	op, keyID, client, code, msg string
}

// New returns the HTTP handler serving store. Requests that reach it
// without a unix-socket peer (see Server) must be signed.
func New(store Backend, opts Options) http.Handler {
	return withRequestID(newServer(store, opts))
}

func newServer(store Backend, opts Options) *server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxSkew <= 0 {
		opts.MaxSkew = signer.DefaultMaxSkew
	}
	if opts.ReplayCache <= 0 {
		opts.ReplayCache = DefaultReplayCache
	}
	if opts.RequestsPerSecond <= 0 {
		opts.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	s := &server{
		opts:    opts,
		clients: make(map[string]*clientState, len(opts.Clients)),
		replay:  newReplayCache(opts.ReplayCache),
		log:     opts.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, c := range opts.Clients {
		s.clients[c.AccessKey] = newClientState(c.AccessKey, c.SecretKey, c.Keys, opts)
	}
	s.root = newClientState("uid=0", nil, []string{AllKeys}, opts)
	s.verifier = &signer.Verifier{
		MaxSkew: opts.MaxSkew,
		SecretKey: func(ak string) ([]byte, bool) {
			c, ok := s.clients[ak]
			if !ok {
				return nil, false
			}
			return c.secretKey, true
		},
	}
	s.store = &policyBackend{Backend: store}
	s.ops = map[string]opFunc{
		wire.OpCreateDataKey:            s.createDataKey(true),
		wire.OpCreateDataKeyNoPlaintext: s.createDataKey(false),
		wire.OpEncryptDataKey:           s.encryptDataKey,
		wire.OpDecryptDataKey:           s.decryptDataKey,
		wire.OpDescribeKey:              s.describeKey,
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &record{}
	status := s.serve(w, r, rec)
	remote := r.RemoteAddr
	if p := peercred.FromContext(r.Context()); p != nil {
		remote = p.String()
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("op", rec.op),
		slog.String("key_id", rec.keyID),
		slog.String("client", rec.client),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", remote),
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
	peer := peercred.FromContext(r.Context())
	if peer != nil && !peer.Allowed(s.opts.SocketGroup) {
		return fail(w, rec, http.StatusForbidden, wire.CodeNoAPIPermission, peer.Refusal(s.opts.SocketGroup))
	}
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
	client, sig, status := s.authenticate(w, r, body, peer, rec)
	if client == nil {
		return status
	}
	rec.client = client.name
	if s.opts.ProjectID != "" && project != s.opts.ProjectID {
		return fail(w, rec, http.StatusForbidden, wire.CodeBadProject, "project id in the path is not served here")
	}
	if h := r.Header.Get(wire.HeaderProjectID); h != "" && h != project {
		return fail(w, rec, http.StatusForbidden, wire.CodeBadProject, "X-Project-Id does not match the project id in the path")
	}
	if !client.limiter.allow(s.opts.Now()) {
		w.Header().Set("Retry-After", "1")
		return fail(w, rec, http.StatusTooManyRequests, wire.CodeGatewayThrottled, "request rate of "+client.name+" exceeds the limit; retry later")
	}
	if sig != nil {
		// Remembered only now, so a request refused for its rate can be
		// retried with the same signature.
		switch s.replay.add(sig.key, sig.expires, s.opts.Now()) {
		case replaySeen:
			return fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth, "incorrect IAM authentication information: "+errReplayed.Error())
		case replayFull:
			w.Header().Set("Retry-After", "1")
			return fail(w, rec, http.StatusTooManyRequests, wire.CodeGatewayThrottled, "too many requests within the signature window; retry later")
		}
	}
	status = run(withClient(r.Context(), client), w, body, rec)
	if sig != nil && status >= 500 {
		// The request had no effect; let the client's retry of the
		// same signed request through.
		s.replay.forget(sig.key, sig.expires)
	}
	return status
}

var errReplayed = errors.New("signature already used; sign each request anew")

// signature identifies a verified request for the replay cache.
type signature struct {
	key     replayKey
	expires time.Time
}

// authenticate finds the client of a request: the verified signer, or
// root on a unix socket. It writes the refusal and returns nil when there
// is none.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request, body []byte, peer *peercred.Peer, rec *record) (*clientState, *signature, int) {
	if r.Header.Get("Authorization") == "" && peer != nil {
		if peer.UID == 0 {
			return s.root, nil, 0
		}
		return nil, nil, fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth,
			fmt.Sprintf("incorrect IAM authentication information: uid %d must sign its requests; only root may send unsigned ones", peer.UID))
	}
	now := s.opts.Now()
	ak, err := s.verifier.Verify(r, body, now)
	if err != nil {
		return nil, nil, fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth, "incorrect IAM authentication information: "+err.Error())
	}
	key, date, err := signatureOf(r)
	if err != nil { // Verify accepted it, so this does not happen
		return nil, nil, fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth, "incorrect IAM authentication information: "+err.Error())
	}
	if s.replay.seen(key, now) {
		return nil, nil, fail(w, rec, http.StatusUnauthorized, wire.CodeGatewayAuth, "incorrect IAM authentication information: "+errReplayed.Error())
	}
	return s.clients[ak], &signature{key: key, expires: date.Add(s.opts.MaxSkew)}, 0
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
