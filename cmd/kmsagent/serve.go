package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"kmsagent/agent/config"
	"kmsagent/agent/peercred"
	"kmsagent/agent/secret"
	"kmsagent/kmsclient/kmsserver"
)

// maxSecretKeyFile bounds the SK file; a Huawei SK is 40 characters.
const maxSecretKeyFile = 4096

// optString is a string flag that knows whether it was given, so an
// explicit "" can override the config.
type optString struct {
	v   string
	set bool
}

func (o *optString) String() string     { return o.v }
func (o *optString) Set(v string) error { o.v, o.set = v, true; return nil }

// apply overrides dst when the flag was given.
func (o *optString) apply(dst *string) {
	if o.set {
		*dst = o.v
	}
}

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	var listen, socket, socketGroup, tlsCert, tlsKey, clientCA, projectID optString
	var stateDir string
	if _, err := parseFlags(env, "kms serve", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.Var(&socket, "socket", "`PATH` of the unix socket for clients on this host, checked with SO_PEERCRED (default [kms.serve] socket, "+config.DefaultServeSocket+"); \"\" for none")
		fs.Var(&socketGroup, "socket-group", "`GROUP` whose members may use the socket besides root (they must sign their requests)")
		fs.Var(&listen, "listen", "TCP `ADDR`, e.g. 0.0.0.0:8443; needs [[kms.serve.client]] access keys, and TLS unless it is a loopback address")
		fs.Var(&tlsCert, "tls-cert", "PEM certificate (chain) `FILE` for TCP connections; re-read on SIGHUP")
		fs.Var(&tlsKey, "tls-key", "PEM private key `FILE` of --tls-cert; re-read on SIGHUP")
		fs.Var(&clientCA, "client-ca", "require TLS client certificates signed by the PEM CAs in `FILE` (a second factor)")
		fs.Var(&projectID, "project-id", "serve only this project `ID`")
		stateDirFlag(fs, &stateDir)
	}); err != nil {
		return err
	}
	// Caught from the start: SIGHUP's default action would end the
	// server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	sc := cfg.KMS.Serve
	socket.apply(&sc.Socket)
	socketGroup.apply(&sc.SocketGroup)
	listen.apply(&sc.Listen)
	tlsCert.apply(&sc.TLSCert)
	tlsKey.apply(&sc.TLSKey)
	clientCA.apply(&sc.ClientCA)
	projectID.apply(&sc.ProjectID)
	if (sc.TLSCert == "") != (sc.TLSKey == "") {
		return usagef("kms serve: --tls-cert and --tls-key (tls_cert, tls_key) go together")
	}
	if sc.ClientCA != "" && sc.TLSCert == "" {
		return usagef("kms serve: --client-ca needs --tls-cert and --tls-key")
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, nil))
	opts := kmsserver.Options{ProjectID: sc.ProjectID, Logger: logger, SocketGroup: kmsserver.NoGroup,
		RequestsPerSecond: sc.RequestsPerSecond, Burst: sc.Burst}
	if sc.SocketGroup != "" {
		if opts.SocketGroup, err = peercred.LookupGroup(sc.SocketGroup); err != nil {
			return fmt.Errorf("kms serve: socket_group: %w", err)
		}
	}
	for _, c := range sc.Clients {
		sk, err := secret.ReadTokenFile(c.SecretKeyFile, maxSecretKeyFile)
		if err != nil {
			return fmt.Errorf("kms serve: client %s: %w", c.AccessKey, err)
		}
		defer sk.Wipe()
		opts.Clients = append(opts.Clients, kmsserver.Client{AccessKey: c.AccessKey, SecretKey: sk.Bytes(), Keys: c.Keys})
	}
	var tlsFiles *kmsserver.TLSFiles
	if sc.TLSCert != "" {
		tlsFiles = &kmsserver.TLSFiles{CertFile: sc.TLSCert, KeyFile: sc.TLSKey, ClientCAFile: sc.ClientCA}
		if err := tlsFiles.Reload(); err != nil {
			return fmt.Errorf("kms serve: %w", err)
		}
	}
	limits := kmsserver.Limits{
		MaxConns:          sc.MaxConnections,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
		ReadTimeout:       sc.ReadTimeout.Std(),
		WriteTimeout:      sc.WriteTimeout.Std(),
		IdleTimeout:       sc.IdleTimeout.Std(),
	}
	store, err := openLocal(env, stateDir)
	if err != nil {
		return err
	}
	srv := kmsserver.NewServer(store, opts, limits, tlsFiles)
	lns, err := serveListeners(sc, opts.SocketGroup, logger)
	if err != nil {
		return err
	}
	defer closeAll(lns)
	for _, ln := range lns {
		if err := srv.Check(ln); err != nil {
			return serveAdvice(err)
		}
	}

	done := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { done <- srv.Serve(ln) }()
		logger.Info("kms serve: listening", "addr", ln.Addr().Network()+":"+ln.Addr().String(), "state_dir", store.Dir(),
			"clients", len(opts.Clients), "tls", tlsFiles != nil, "client_certs", sc.ClientCA != "")
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
wait:
	for {
		select {
		case err := <-done:
			return fmt.Errorf("kms serve: %w", err)
		case <-hup:
			if tlsFiles != nil {
				reloadTLS(tlsFiles, logger)
			}
		case <-ctx.Done():
			break wait
		}
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("kms serve: shutdown: %w", err)
	}
	return nil
}

// reloadTLS re-reads the certificate files, telling systemd.
func reloadTLS(files *kmsserver.TLSFiles, logger *slog.Logger) {
	daemon.SdNotify(false, daemon.SdNotifyReloading)
	if err := files.Reload(); err != nil {
		logger.Error("kms serve: TLS reload failed; the previous certificate stays in use", "error", err)
	} else {
		logger.Info("kms serve: TLS certificate reloaded", "cert", files.CertFile)
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
}

// serveAdvice turns the server's refusal of a listener into what to
// configure.
func serveAdvice(err error) error {
	switch {
	case errors.Is(err, kmsserver.ErrNoClients):
		return fmt.Errorf("kms serve: refusing to serve %v: add [[kms.serve.client]] entries (access_key, secret_key_file, keys) to the config, or serve this host on the unix socket only (--socket)", err)
	case errors.Is(err, kmsserver.ErrNeedsTLS):
		return fmt.Errorf("kms serve: refusing to serve %v: set tls_cert and tls_key in [kms.serve] (--tls-cert, --tls-key), or listen on 127.0.0.1", err)
	}
	return fmt.Errorf("kms serve: %w", err)
}

// serveListeners takes the sockets systemd passed, and opens the
// configured unix socket and TCP address for the kinds systemd did not
// pass: the shipped socket unit passes the unix socket, and listen in
// [kms.serve] adds TCP for other hosts.
func serveListeners(sc config.Serve, group int, logger *slog.Logger) ([]net.Listener, error) {
	passed, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("kms serve: systemd sockets: %w", err)
	}
	var lns []net.Listener
	var passedUnix, passedTCP bool
	for _, ln := range passed {
		if ln == nil {
			closeAll(lns)
			return nil, errors.New("kms serve: systemd passed a socket that is not a stream socket; use ListenStream")
		}
		lns = append(lns, ln)
		switch ln.Addr().(type) {
		case *net.UnixAddr:
			passedUnix = true
		case *net.TCPAddr:
			passedTCP = true
		}
	}
	if passedTCP && sc.Listen != "" {
		closeAll(lns)
		return nil, usagef("kms serve: listen %s is set and systemd passed a TCP socket; configure one of them", sc.Listen)
	}
	if passedUnix && sc.Socket != "" {
		logger.Info("kms serve: using the unix socket systemd passed", "ignored_socket", sc.Socket)
		sc.Socket = ""
	}
	if len(lns) == 0 && sc.Socket == "" && sc.Listen == "" {
		return nil, usagef("kms serve: nothing to listen on: set --socket PATH (this host) or --listen ADDR with access keys and TLS (other hosts)")
	}
	if sc.Socket != "" {
		ln, err := peercred.Listen(sc.Socket, group)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("kms serve: %w", err)
		}
		lns = append(lns, ln)
	}
	if sc.Listen != "" {
		ln, err := net.Listen("tcp", sc.Listen)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("kms serve: %w", err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}
