package cryptkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/audit"
	"kmsagent/agent/peercred"
	"kmsagent/agent/safepath"
	"kmsagent/agent/secret"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Lookup maps a volume name, as systemd-cryptsetup knows it (the first
// crypttab field), to the device or image file holding its LUKS2 header.
// It returns an error wrapping ErrUnknownVolume for a name it does not
// know. Crypttab is the default; a daemon with its own volume table maps
// its configured names instead.
type Lookup interface {
	Lookup(ctx context.Context, name string) (device string, err error)
}

// Keyer yields the keyslot passphrase of a device and the CMK that
// unwrapped it (also on error, where known, for the audit record).
// KMSKeyer does it in this process; a daemon that keeps key material out
// of its own memory can do it in a worker instead.
type Keyer interface {
	Passphrase(ctx context.Context, device string) (*secret.Key, token.KMS, error)
}

// Deliverer writes the keyslot passphrase of a device to a client's
// connection itself, so that the caller never holds it: a daemon hands
// the connection to a short-lived worker. approve must be called with
// the CMK once the key is unwrapped and before a byte of it is written;
// when it fails, nothing is written. Deliver returns the CMK (also on
// error, where known) and closes nothing: the caller closes c.
type Deliverer interface {
	Deliver(ctx context.Context, c *net.UnixConn, device string, approve func(token.KMS) error) (token.KMS, error)
}

// DeliverFunc is a function as a Deliverer.
type DeliverFunc func(ctx context.Context, c *net.UnixConn, device string, approve func(token.KMS) error) (token.KMS, error)

// Deliver implements Deliverer.
func (f DeliverFunc) Deliver(ctx context.Context, c *net.UnixConn, device string, approve func(token.KMS) error) (token.KMS, error) {
	return f(ctx, c, device, approve)
}

// keyerDeliverer delivers a Keyer's passphrase from this process.
type keyerDeliverer struct{ k Keyer }

func (d keyerDeliverer) Deliver(ctx context.Context, c *net.UnixConn, device string, approve func(token.KMS) error) (token.KMS, error) {
	pass, cmk, err := d.k.Passphrase(ctx, device)
	if err != nil {
		return cmk, err
	}
	defer pass.Wipe()
	if err := approve(cmk); err != nil {
		return cmk, err
	}
	c.SetWriteDeadline(time.Now().Add(WriteTimeout))
	if _, err := c.Write(pass.Bytes()); err != nil {
		return cmk, err
	}
	return cmk, nil
}

// Auditor records key uses; *audit.Log is one.
type Auditor interface {
	Write(ctx context.Context, r audit.Record) error
}

// KMSKeyer opens the device read-only and calls volume.Passphrase: the
// key is unwrapped but the keyslot not opened, as that would put the
// volume key in this process.
type KMSKeyer struct{ KMS kmsclient.KMS }

// Passphrase implements Keyer.
func (k KMSKeyer) Passphrase(ctx context.Context, device string) (*secret.Key, token.KMS, error) {
	f, err := volume.OpenDevice(device, false)
	if err != nil {
		return nil, token.KMS{}, err
	}
	defer f.Close()
	return volume.Passphrase(ctx, f, k.KMS)
}

// Defaults of the Server's limits.
const (
	DefaultMaxConns = 16
	DefaultTimeout  = 2 * time.Minute
)

// WriteTimeout bounds the write of the key: the client is blocked in
// read, so anything longer means it is gone or not reading.
const WriteTimeout = 10 * time.Second

// errAuditFailed marks a key withheld because its use could not be
// recorded.
var errAuditFailed = errors.New("audit record not written")

// ErrNotRoot means a client other than uid 0 connected.
var ErrNotRoot = errors.New("peer is not root")

// Server answers systemd-cryptsetup's key-file reads on a listening
// socket. Lookup, Audit and one of Deliverer and Keyer are required.
type Server struct {
	Lookup Lookup
	// Deliverer writes the key; when nil, Keyer's key is written from
	// this process.
	Deliverer Deliverer
	Keyer     Keyer
	Audit     Auditor
	// Log receives one line per request; nil discards.
	Log *slog.Logger
	// MaxConns bounds the requests served at once; 0 means
	// DefaultMaxConns. Further clients wait in the listen backlog.
	MaxConns int
	// Timeout bounds one request from accept to close, KMS call
	// included; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Listen creates the key socket at path, mode 0600. Its directory is
// created 0700 if missing and must be owned by root (or this process's
// user) and writable by nobody else, so that only root can replace the
// socket; others may traverse it (/run/kmsagent is 0711 once a share
// has put its run files there, 0750 under kmsagent.socket), since the
// socket's own mode and the peer check keep them from the key. The socket itself is set up as for the
// agent's other servers (peercred.Listen): a stale socket left by a
// previous run is removed, while a live one or anything else at path is
// an error. The caller closes the listener, which removes the socket.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("key socket directory: %w", err)
	}
	d, err := safepath.OpenTrustedDir(dir, 0o022)
	if err != nil {
		return nil, fmt.Errorf("key socket directory: %w", err)
	}
	d.Close()
	// No group: the socket is root's alone, and the directory keeps
	// others out between bind and chmod.
	ln, err := peercred.Listen(path, 0)
	if err != nil {
		return nil, fmt.Errorf("key socket: %w", err)
	}
	return ln.(*net.UnixListener), nil
}

// Serve answers connections on ln until ctx ends or ln fails, then
// cancels the requests under way (their clients get nothing, as on any
// error), waits for them and returns. It returns nil when ctx
// ended. ln may come from Listen or from systemd socket activation.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	if s.Lookup == nil || (s.Keyer == nil && s.Deliverer == nil) || s.Audit == nil {
		return errors.New("cryptkey: Server needs Lookup, Audit and a Deliverer or Keyer")
	}
	limit := s.MaxConns
	if limit <= 0 {
		limit = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })
	defer stop()
	slots := make(chan struct{}, limit)
	var backoff time.Duration
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of descriptors or memory is passing, and at boot
			// giving up would fail every volume still to come: wait
			// and accept again, as net/http does.
			if isTransient(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("key socket: accept failed, retrying", "error", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("key socket: accept: %w", err)
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serve(ctx, c)
		}()
	}
}

// isTransient reports accept errors that go away by themselves.
func isTransient(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// serve answers one client: the passphrase, or nothing.
func (s *Server) serve(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	rec := audit.Record{Kind: audit.KindLUKS, Op: audit.OpCrypttabKey}
	addr := ""
	if a, ok := c.RemoteAddr().(*net.UnixAddr); ok {
		addr = a.Name
	}
	log := s.logger().With("peer", addr)
	// The record is written even when the request ran out of time.
	writeAudit := func(r audit.Record) error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), WriteTimeout)
		defer cancel()
		return s.Audit.Write(actx, r)
	}
	fail := func(err error) {
		rec = rec.WithError(err)
		log.Warn("crypttab key refused", "volume", rec.Volume, "uid", rec.UID, "pid", rec.PID, "error", err)
		if aerr := writeAudit(rec); aerr != nil {
			log.Error("audit record not written", "error", aerr)
		}
	}

	peer := peercred.Of(c)
	if peer.Err != nil {
		fail(peer.Err)
		return
	}
	rec.Caller = audit.LookupCaller(peer.UID, peer.PID)
	name, nameErr := VolumeFromPeer(addr)
	rec.Volume = name
	// Root only, checked before anything else is done for the peer.
	if peer.UID != 0 {
		fail(fmt.Errorf("%w: uid %d, pid %d", ErrNotRoot, peer.UID, peer.PID))
		return
	}
	if nameErr != nil {
		fail(nameErr)
		return
	}
	dev, err := s.Lookup.Lookup(ctx, name)
	if err != nil {
		fail(err)
		return
	}
	log = log.With("device", dev)
	deliver := s.Deliverer
	if deliver == nil {
		deliver = keyerDeliverer{s.Keyer}
	}
	approved := false
	// Fail closed: a key that cannot be recorded is not handed out.
	approve := func(cmk token.KMS) error {
		rec.CMK, rec.Provider = cmk.KeyID, cmk.Provider
		rec = rec.WithError(nil)
		if err := writeAudit(rec); err != nil {
			return fmt.Errorf("%w: %w", errAuditFailed, err)
		}
		approved = true
		return nil
	}
	cmk, err := deliver.Deliver(ctx, c, dev, approve)
	rec.CMK, rec.Provider = cmk.KeyID, cmk.Provider
	switch {
	case err == nil:
		log.Info("crypttab key delivered", "volume", name, "uid", rec.UID, "pid", rec.PID, "unit", rec.Unit, "cmk", rec.CMK)
	case approved:
		// Recorded as used already: the key may have left in part.
		log.Error("crypttab key not delivered", "volume", name, "error", err)
	case errors.Is(err, errAuditFailed):
		log.Error("crypttab key withheld", "volume", name, "error", err)
	default:
		fail(fmt.Errorf("%s: %w", dev, err))
	}
}
