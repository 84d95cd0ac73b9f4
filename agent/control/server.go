package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kmsagent/agent/peercred"
)

// maxBody bounds request bodies; a request names one volume.
const maxBody = 16 << 10

// Options configure a Server.
type Options struct {
	// AdminGroup may change state besides root; zero or negative for
	// root only.
	AdminGroup int
	Metrics    prometheus.Gatherer // nil: /metrics answers 404
	Logger     *slog.Logger
}

// Server serves the control API on unix sockets.
type Server struct {
	d     Daemon
	group atomic.Int64
	log   *slog.Logger
	http  *http.Server
}

// NewServer prepares a server for d.
func NewServer(d Daemon, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{d: d, log: opts.Logger}
	s.group.Store(int64(opts.AdminGroup))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("POST /v1/mount", s.admin(s.mount))
	mux.HandleFunc("POST /v1/unmount", s.admin(s.unmount))
	mux.HandleFunc("POST /v1/reload", s.admin(s.reload))
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Code: "bad_request", Message: fmt.Sprintf("no such endpoint %s %s; see the control package for the API", r.Method, r.URL.Path)})
	})
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// No WriteTimeout: a mount waits for the KMS and the worker,
		// and its context ends when the client goes away.
		IdleTimeout:    time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		ConnContext:    peercred.ConnContext(nil),
	}
	return s
}

// SetAdminGroup changes the admin group, for a reload.
func (s *Server) SetAdminGroup(gid int) { s.group.Store(int64(gid)) }

// Serve serves ln until Shutdown; only unix sockets are served, as the
// peer's credentials are the API's authentication.
func (s *Server) Serve(ln net.Listener) error {
	if _, ok := ln.Addr().(*net.UnixAddr); !ok {
		return fmt.Errorf("control API on %s %s: only unix sockets are served", ln.Addr().Network(), ln.Addr())
	}
	return s.http.Serve(ln)
}

// Shutdown stops the listeners and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// admin lets root and the admin group through, and refuses everyone
// else with 403.
func (s *Server) admin(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := peercred.FromContext(r.Context())
		group := int(s.group.Load())
		if p == nil {
			writeError(w, &Error{Status: http.StatusForbidden, Code: "forbidden", Message: "not a unix socket connection: the peer cannot be identified"})
			return
		}
		if !p.Allowed(group) {
			s.log.Warn("control request refused", "path", r.URL.Path, "peer", p.String())
			msg := p.Refusal(group) + " to " + strings.TrimPrefix(r.URL.Path, "/v1/") + "; run it as root"
			if group > 0 {
				msg += " or as a member of the admin group"
			}
			writeError(w, &Error{Status: http.StatusForbidden, Code: "forbidden", Message: msg})
			return
		}
		h(w, r, p.String())
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	vols, err := s.d.Status(r.Context())
	if err != nil {
		writeError(w, toError(err))
		return
	}
	writeJSON(w, http.StatusOK, StatusReply{Status: s.d.StatusLine(), Volumes: vols})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{OK: true, Status: s.d.StatusLine()})
}

func (s *Server) mount(w http.ResponseWriter, r *http.Request, actor string) {
	var req MountRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err)
		return
	}
	info, err := s.d.Mount(r.Context(), req.Name, actor)
	s.log.Info("control: mount", "volume", req.Name, "peer", actor, "error", err)
	if err != nil {
		writeError(w, toError(err))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) unmount(w http.ResponseWriter, r *http.Request, actor string) {
	var req UnmountRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err)
		return
	}
	what := req.Name + req.Target
	err := s.d.Unmount(r.Context(), what, req.Lazy, actor)
	s.log.Info("control: unmount", "volume", what, "lazy", req.Lazy, "peer", actor, "error", err)
	if err != nil {
		writeError(w, toError(err))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request, actor string) {
	if err := decode(r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.d.Reload(r.Context(), actor)
	if err != nil {
		writeError(w, &Error{Status: http.StatusUnprocessableEntity, Code: "bad_config", Message: oneLine(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// decode reads one JSON object (an empty body is an empty object);
// unknown fields and trailing data are errors.
func decode(r *http.Request, v any) *Error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return badRequest("reading the request: %v", err)
	}
	if len(body) > maxBody {
		return badRequest("request body over %d bytes", maxBody)
	}
	return decodeBody(body, v)
}

func decodeBody(body []byte, v any) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %s", oneLine(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("request body: data after the JSON object")
	}
	return nil
}

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf(format, args...)}
}

// validName checks a name or path from a request: the daemon matches it
// against its table, but it also ends up in logs.
func validName(field, s string) *Error {
	switch {
	case s == "":
		return badRequest("%s is empty", field)
	case len(s) > 4096:
		return badRequest("%s is longer than 4096 bytes", field)
	case strings.ContainsAny(s, "\x00\n\r"):
		return badRequest("%s holds a NUL or line break", field)
	}
	return nil
}

func (m *MountRequest) validate() *Error { return validName("name", m.Name) }

func (u *UnmountRequest) validate() *Error {
	switch {
	case u.Name != "" && u.Target != "":
		return badRequest("give name or target, not both")
	case u.Target != "":
		if !strings.HasPrefix(u.Target, "/") {
			return badRequest("target %q is not an absolute path", u.Target)
		}
		return validName("target", u.Target)
	}
	return validName("name", u.Name)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.Status == 0 {
		e.Status = statusOf(e.Code)
	}
	writeJSON(w, e.Status, struct {
		Error *Error `json:"error"`
	}{e})
}
