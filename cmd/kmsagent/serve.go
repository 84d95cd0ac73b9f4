package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"kmsagent/kmsclient/kmsserver"
	"kmsagent/kmsclient/secret"
)

// maxSecretKeyFile bounds the SK file; a Huawei SK is 40 characters.
const maxSecretKeyFile = 4096

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	var listen, accessKey, skFile, projectID, dir string
	if _, err := parseFlags(env, "kms serve", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&listen, "listen", "", "address to listen on, e.g. 127.0.0.1:8420 (not needed under systemd socket activation)")
		fs.StringVar(&accessKey, "access-key", "", "require requests signed with this access key (SDK-HMAC-SHA256)")
		fs.StringVar(&skFile, "secret-key-file", "", "file holding the secret key of --access-key (mode 0600)")
		fs.StringVar(&projectID, "project-id", "", "serve only this project id")
		stateDirFlag(fs, &dir)
	}); err != nil {
		return err
	}
	if (accessKey == "") != (skFile == "") {
		return usagef("kms serve: --access-key and --secret-key-file go together")
	}
	ln, err := serveListener(listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if accessKey == "" && !isLoopback(ln.Addr()) {
		return fmt.Errorf("kms serve: refusing to serve keys on %s without authentication; listen on 127.0.0.1 or set --access-key and --secret-key-file", ln.Addr())
	}
	store, err := openLocal(env, dir)
	if err != nil {
		return err
	}
	opts := kmsserver.Options{
		ProjectID: projectID,
		Logger:    slog.New(slog.NewTextHandler(env.stderr, nil)),
	}
	if accessKey != "" {
		sk, err := secret.ReadTokenFile(skFile, maxSecretKeyFile)
		if err != nil {
			return fmt.Errorf("kms serve: %w", err)
		}
		defer sk.Wipe()
		opts.AccessKey, opts.SecretKey = accessKey, sk.Bytes()
	}
	srv := &http.Server{
		Handler:           kmsserver.New(store, opts),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	opts.Logger.Info("kms serve: listening", "addr", ln.Addr().String(), "state_dir", store.Dir(), "auth", accessKey != "")
	daemon.SdNotify(false, daemon.SdNotifyReady)
	select {
	case err := <-done:
		return fmt.Errorf("kms serve: %w", err)
	case <-ctx.Done():
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("kms serve: shutdown: %w", err)
	}
	return nil
}

// serveListener takes the socket systemd passed, else listens on addr.
func serveListener(addr string) (net.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("kms serve: systemd sockets: %w", err)
	}
	switch {
	case len(lns) > 1:
		return nil, errors.New("kms serve: systemd passed more than one socket; configure one ListenStream")
	case len(lns) == 1 && lns[0] != nil:
		if addr != "" {
			lns[0].Close()
			return nil, usagef("kms serve: --listen conflicts with the socket systemd passed")
		}
		return lns[0], nil
	case addr == "":
		return nil, usagef("kms serve: --listen ADDR is required, e.g. --listen 127.0.0.1:8420")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kms serve: %w", err)
	}
	return ln, nil
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
