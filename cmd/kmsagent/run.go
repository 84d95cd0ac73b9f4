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
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"kmsagent/agent/audit"
	"kmsagent/agent/config"
	"kmsagent/agent/control"
	"kmsagent/agent/cryptkey"
	"kmsagent/agent/daemon"
	"kmsagent/agent/peercred"
	"kmsagent/agent/service"
	"kmsagent/agent/source"
	"kmsagent/agent/state"
	"kmsagent/agent/uevent"
)

// runDaemon is `kmsagent run`: the daemon, a systemd Type=notify service.
// It mounts the [[volume]] entries marked auto, serves the control socket
// and keeps running until SIGTERM; SIGHUP re-reads the configuration.
func runDaemon(ctx context.Context, env *cliEnv, args []string) error {
	var socket optString
	var workerSocket string
	if _, err := parseFlags(env, "run", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.Var(&socket, "socket", "`PATH` of the control socket (default [agent] socket, "+config.DefaultAgentSocket+"); systemd's socket wins")
		fs.StringVar(&workerSocket, "worker-socket", "", "start every worker through the worker socket at `PATH` (kmsagent-worker.socket), outside this process's sandbox: for a daemon its unit confines to a mount namespace of its own, whose mounts and unmounts would not reach the host")
	}); err != nil {
		return err
	}
	// Caught from the start: SIGHUP's default action would end the
	// daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	path, explicit := config.Path(env.configFlag)
	if explicit {
		// The workers start in / and are handed this path; reloads
		// read it too.
		path = absConfigPath(path)
	}
	load := func() (*config.Config, error) { return config.Load(path, explicit) }
	cfg, err := load()
	if err != nil {
		return err
	}
	socket.apply(&cfg.Agent.Socket)
	logger := slog.New(slog.NewTextHandler(env.stderr, nil))
	group, err := adminGroup(cfg)
	if err != nil {
		return err
	}
	// Before the socket: a second daemon must stop at the state
	// directory's lock, not take over the first one's socket.
	records, auditor, err := openRecords(cfg, logger)
	if err != nil {
		return err
	}
	defer records.Close()
	ln, keyLn, err := listeners(cfg, group, logger)
	if err != nil {
		return err
	}
	defer ln.Close()
	if keyLn != nil {
		defer keyLn.Close()
	}

	watchdog, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("run: WATCHDOG_USEC ignored", "error", err)
	}
	svc, err := service.New(service.Options{
		Config:     cfg,
		LoadConfig: load,
		Logger:     logger,
		// The daemon retries a volume with its own backoff, shown in
		// its status; its workers try each KMS call once.
		KMSAttempts:  1,
		WorkerSocket: workerSocket,
		Confined:     workerSocket != "",
	})
	if err != nil {
		return err
	}
	var srv *control.Server
	d := daemon.New(cfg, daemon.Options{
		Service:  daemonService{svc},
		Load:     load,
		Notify:   sdNotifier{},
		State:    records.state,
		Audit:    auditor,
		Devices:  daemon.SystemDevices{Resolver: &source.Resolver{}},
		Logger:   logger,
		Watchdog: watchdog,
		// A share whose worker died is noticed within this and, when
		// auto, mounted again; the check reads the mount table and the
		// workers' records.
		CheckEvery: 10 * time.Second,
		Applied: func(c *config.Config) {
			g, err := adminGroup(c)
			if err != nil {
				logger.Error("reload: admin_group not changed", "error", err)
				return
			}
			srv.SetAdminGroup(g)
		},
	})
	srv = control.NewServer(d, control.Options{AdminGroup: group, Metrics: d.Metrics().Registry, Logger: logger})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("run: control socket", "addr", ln.Addr().String(), "admin_group", cfg.Agent.AdminGroup, "volumes", len(cfg.Volumes), "config", cfgName(cfg))

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	if keyLn != nil {
		keys := &cryptkey.Server{
			Lookup: &cryptkey.Crypttab{Path: cfg.Agent.Crypttab},
			// A worker per request holds the key, never this process.
			Deliverer: cryptkey.DeliverFunc(svc.DeliverKey),
			Audit:     records.audit,
			Log:       logger,
		}
		keysDone := make(chan struct{})
		go func() {
			defer close(keysDone)
			if err := keys.Serve(runCtx, keyLn); err != nil {
				logger.Error("run: key socket stopped; crypttab volumes cannot get their keys", "error", err)
			}
		}()
		defer func() { stop(); <-keysDone }()
		logger.Info("run: key socket for crypttab", "addr", keyLn.Addr().String(), "crypttab", cfg.Agent.Crypttab)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(runCtx) }()
	stopHotplug := startHotplug(runCtx, d, logger)
	defer stopHotplug()
	for {
		select {
		case <-hup:
			if _, err := d.Reload(ctx, "sighup"); err != nil {
				logger.Error("run: SIGHUP", "error", err)
			}
		case err := <-serveErr:
			stop()
			<-runErr
			return fmt.Errorf("run: control socket: %w", err)
		case err := <-runErr:
			srv.Shutdown(context.Background())
			if err != nil {
				return fmt.Errorf("run: %w", err)
			}
			return nil
		case <-ctx.Done():
			// Answer no more requests, then let the daemon stop.
			shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			srv.Shutdown(shutdown)
			cancel()
			stop()
			if err := <-runErr; err != nil {
				return fmt.Errorf("run: stop: %w", err)
			}
			return nil
		}
	}
}

// records are the daemon's files: the state file, locked for this
// daemon, and the audit log.
type records struct {
	state *daemon.StateFile
	audit *audit.Log
}

// openRecords opens [agent] state_dir and audit_log. Another daemon on
// the same state directory is a one-line error naming its pid. The audit
// log fails closed unless audit_fail_open is set.
func openRecords(cfg *config.Config, logger *slog.Logger) (*records, daemon.Auditor, error) {
	st, err := daemon.OpenStateFile(cfg.Agent.StateDir)
	if errors.Is(err, state.ErrLocked) {
		return nil, nil, fmt.Errorf("run: %w; stop it first (systemctl stop kmsagent), or give this one another [agent] state_dir", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("run: agent.state_dir: %w", err)
	}
	// The log's directory is made private when missing; an existing one
	// must already be root's and not writable by others.
	if err := os.MkdirAll(filepath.Dir(cfg.Agent.AuditLog), 0o700); err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("run: agent.audit_log: %w", err)
	}
	log, err := audit.Open(cfg.Agent.AuditLog, audit.Options{
		FailOpen: cfg.Agent.AuditFailOpen,
		Report:   func(err error) { logger.Error("audit log", "error", err) },
	})
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("run: agent.audit_log: %w", err)
	}
	return &records{state: st, audit: log}, daemon.AuditLog{Log: log}, nil
}

func (r *records) Close() {
	r.audit.Close()
	r.state.Close()
}

// startHotplug follows block device events for the daemon: udev's
// where udevd runs (its /dev/disk links exist by then), the kernel's
// where it does not. Without the netlink socket the daemon runs on
// without hot-plug, which it says. The returned function stops it.
func startHotplug(ctx context.Context, d *daemon.Daemon, logger *slog.Logger) func() {
	group := uevent.DetectGroup(uevent.UdevControl)
	ln, err := uevent.Listen(uevent.Options{
		Group:     group,
		Subsystem: "block",
		Actions:   []uevent.Action{uevent.ActionAdd, uevent.ActionChange, uevent.ActionRemove},
		OnDrop:    func(err error) { logger.Warn("run: device event dropped", "error", err) },
	})
	if err != nil {
		logger.Error("run: no disk hot-plug: volumes on disks attached later are not mounted until kmsagent mount", "error", err)
		return func() {}
	}
	logger.Info("run: following block device events", "source", group.String())
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Hotplug(ctx, ln); err != nil {
			logger.Error("run: disk hot-plug stopped", "error", err)
		}
	}()
	return func() {
		cancel()
		ln.Close()
		<-done
	}
}

func adminGroup(cfg *config.Config) (int, error) {
	if cfg.Agent.AdminGroup == "" {
		return 0, nil
	}
	g, err := peercred.LookupGroup(cfg.Agent.AdminGroup)
	if err != nil {
		return 0, fmt.Errorf("run: agent.admin_group: %w", err)
	}
	return g, nil
}

// listeners are the control socket and the crypttab key socket (nil
// when [agent] cryptsetup_socket is ""): the ones systemd passed, else
// made here. Among systemd's, the one at cryptsetup_socket's path is the
// key socket and the first other unix socket the control socket.
func listeners(cfg *config.Config, group int, logger *slog.Logger) (ctl net.Listener, keys *net.UnixListener, err error) {
	passed, err := activation.Listeners()
	if err != nil {
		return nil, nil, fmt.Errorf("run: systemd sockets: %w", err)
	}
	keyPath := cfg.Agent.CryptsetupSocket
	for _, l := range passed {
		u, ok := l.(*net.UnixListener)
		switch {
		case ok && keyPath != "" && u.Addr().String() == keyPath && keys == nil:
			keys = u
		case ok && ctl == nil:
			ctl = u
		case l != nil:
			l.Close()
		}
	}
	closeAll := func() {
		if ctl != nil {
			ctl.Close()
		}
		if keys != nil {
			keys.Close()
		}
	}
	if ctl != nil {
		logger.Info("run: using the socket systemd passed", "ignored_socket", cfg.Agent.Socket)
	} else if len(passed) > 0 {
		closeAll()
		return nil, nil, errors.New("run: systemd passed no unix stream socket for control; use ListenStream=/run/kmsagent/agent.sock")
	} else if ctl, err = peercred.Listen(cfg.Agent.Socket, group); err != nil {
		return nil, nil, fmt.Errorf("run: control socket: %w", err)
	}
	if keys == nil && keyPath != "" {
		if keys, err = cryptkey.Listen(keyPath); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("run: agent.cryptsetup_socket: %w", err)
		}
	}
	return ctl, keys, nil
}

type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := sddaemon.SdNotify(false, state)
	return err
}
