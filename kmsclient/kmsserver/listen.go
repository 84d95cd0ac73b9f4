package kmsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"kmsagent/agent/peercred"
)

// Errors of Server.Serve for listeners it refuses to serve on.
var (
	ErrNoClients  = errors.New("a TCP listener needs access keys: requests over TCP must be signed")
	ErrNeedsTLS   = errors.New("a TCP listener on a non-loopback address needs TLS")
	ErrListenType = errors.New("only unix and TCP listeners are served")
)

// Limits bound the resources clients can hold.
type Limits struct {
	// MaxConns caps the connections open at once over all listeners;
	// further ones wait in the kernel's accept queue, costing the server
	// no file descriptor and no memory.
	MaxConns          int
	ReadHeaderTimeout time.Duration // also bounds the TLS handshake
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
}

// DefaultLimits are generous for a KMS whose requests are a few hundred
// bytes answered in a millisecond.
var DefaultLimits = Limits{
	MaxConns:          256,
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	WriteTimeout:      10 * time.Second,
	IdleTimeout:       60 * time.Second,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	return l
}

// Server serves the handler on unix and TCP listeners under the rules of
// the package comment.
type Server struct {
	h     *server
	tls   *TLSFiles // nil without TLS
	slots chan struct{}
	idle  idleConns
	http  *http.Server
}

// NewServer prepares a server; tlsFiles may be nil.
func NewServer(store Backend, opts Options, limits Limits, tlsFiles *TLSFiles) *Server {
	limits = limits.withDefaults()
	h := newServer(store, opts)
	s := &Server{h: h, tls: tlsFiles, slots: make(chan struct{}, limits.MaxConns), idle: idleConns{wake: make(chan struct{}, 1)}}
	s.http = &http.Server{
		Handler:           withRequestID(h),
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.WriteTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		ConnState:         s.idle.track,
		ConnContext: peercred.ConnContext(func(c net.Conn) net.Conn {
			if lc, ok := c.(*limitedConn); ok {
				return lc.Conn
			}
			return nil
		}),
	}
	return s
}

// Check reports whether Serve would refuse ln.
func (s *Server) Check(ln net.Listener) error {
	switch a := ln.Addr().(type) {
	case *net.UnixAddr:
		return nil
	case *net.TCPAddr:
		if len(s.h.clients) == 0 {
			return fmt.Errorf("%s: %w", a, ErrNoClients)
		}
		if s.tls == nil && !a.IP.IsLoopback() {
			return fmt.Errorf("%s: %w", a, ErrNeedsTLS)
		}
		return nil
	default:
		return fmt.Errorf("%s %s: %w", ln.Addr().Network(), ln.Addr(), ErrListenType)
	}
}

// Serve serves ln until Shutdown; see Check for the listeners it refuses.
// TCP connections use TLS when the server has it.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.Check(ln); err != nil {
		return err
	}
	var l net.Listener = &limitListener{Listener: ln, slots: s.slots, idle: &s.idle, done: make(chan struct{})}
	if _, ok := ln.Addr().(*net.TCPAddr); ok && s.tls != nil {
		l = tls.NewListener(l, s.tls.config())
	}
	return s.http.Serve(l)
}

// Shutdown stops the listeners and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// limitListener hands out at most cap(slots) connections at once: Accept
// waits for a free slot before it takes the next connection from the
// kernel. When all slots are taken it first closes an idle keep-alive
// connection, which its client reopens at the cost of a handshake:
// clients keep pools of them (the huaweicloud client up to 64 after a
// burst), and they must not make others wait for IdleTimeout.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	idle      *idleConns
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
wait:
	for {
		select {
		case l.slots <- struct{}{}:
			break wait
		default:
		}
		l.idle.closeOne()
		select {
		case l.slots <- struct{}{}:
			break wait
		case <-l.idle.wake:
			// A connection went idle: close it too.
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close also wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// idleConns tracks the connections waiting between requests.
type idleConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wake  chan struct{} // gets a token when a connection goes idle
}

// track is the http.Server ConnState hook.
func (ic *idleConns) track(c net.Conn, state http.ConnState) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if state == http.StateIdle {
		if ic.conns == nil {
			ic.conns = make(map[net.Conn]struct{})
		}
		ic.conns[c] = struct{}{}
		select {
		case ic.wake <- struct{}{}:
		default:
		}
		return
	}
	delete(ic.conns, c)
}

// closeOne closes some idle connection, if there is one. The close runs
// apart: a TLS connection sends its close alert with a deadline, and
// Accept must not wait for it.
func (ic *idleConns) closeOne() {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for c := range ic.conns {
		delete(ic.conns, c)
		go c.Close()
		return
	}
}
