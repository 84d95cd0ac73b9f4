// Package service owns the verbs on volumes: format, mount, unmount,
// status, rewrap, export-key, enroll and unenroll. The CLI (cmd/kmsagent)
// and the daemon (kmsagent run) both call it, so what a volume is, how its
// worker is started and watched, and what its status is are decided in
// one place; the callers parse their input and print or serve the result.
// It follows fscrypt's actions package: it returns typed errors and names
// no command-line flag or command; advice for an admin at a terminal is
// added by the CLI.
//
// A volume is one of two kinds: a share (a gocryptfs-v2 cipher directory
// served as a FUSE mount by a worker that lives as long as the mount) or
// a LUKS2 volume (opened with dm-crypt by a short-lived unlock worker).
// The kind comes from the configuration, or from the source itself
// (Probe). Keys are held only by the workers (package agent/worker),
// never by the process that calls this package.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"kmsagent/agent/config"
	"kmsagent/agent/kmsconn"
	"kmsagent/agent/source"
	"kmsagent/blockdev/probe"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
	"kmsagent/kmsclient"
)

// Kind is the kind of a volume.
type Kind string

const (
	KindShare Kind = "fuse" // gocryptfs-v2 cipher directory, served by a FUSE worker
	KindLUKS  Kind = "luks" // LUKS2 device or image file, opened with dm-crypt
)

// Spec describes one volume to mount: a [[volume]] of the configuration,
// or the arguments of kmsagent mount.
type Spec struct {
	// Name is the volume's name: for LUKS the device-mapper name
	// (crypt.DefaultName of the volume when empty); for a share only a
	// label.
	Name string
	// Kind is the volume's kind; probed from Source when empty.
	Kind Kind
	// Source is the cipher directory or the LUKS2 device or image file.
	Source string
	// Target is the mount point; optional for LUKS (open only).
	Target string
	// FSType is a LUKS volume's file system type; detected when empty.
	FSType string
	// Options are mount options: for a share ro, rw, allow_other and the
	// kernel's nosuid, nodev, noexec, suid, dev, exec,
	// default_permissions; for LUKS whatever mount(8) takes.
	Options []string
	// ReadOnly maps and mounts read-only.
	ReadOnly bool
	// Discard passes discards (TRIM) to a LUKS volume's device.
	Discard bool
}

// Options configure a Service.
type Options struct {
	// Config is the configuration. When nil, LoadConfig is called the
	// first time the KMS is needed, so verbs that need no KMS (status,
	// unmount) work with a configuration that does not load.
	Config     *config.Config
	LoadConfig func() (*config.Config, error)
	// ConfigPath is passed to workers as --config; Config.Path when
	// empty. Workers load the configuration themselves: it holds
	// credentials, which are not passed on command lines.
	ConfigPath string
	// RunDir holds the share locks and worker records;
	// share.DefaultRunDir when empty.
	RunDir string
	Logger *slog.Logger
	// Executable is the kmsagent binary started as the workers;
	// os.Executable when empty.
	Executable string
	// KMSAttempts is how many times the workers try a KMS call that
	// is throttled or unavailable; 0 for kmsclient.DefaultRetry's. The
	// daemon sets 1: it retries the volume itself, with a backoff its
	// status shows, instead of waiting in the dark for the worker's
	// retries (up to half a minute, and READY=1 with it).
	KMSAttempts int
	// Notify, when set, gets what an admin who mounts by hand should
	// see: a worker's warnings, stale mounts removed. They are logged
	// either way.
	Notify func(Note)
	// InitramfsRecordDir is where the initramfs noted the volumes it
	// unlocked; initramfs.RecordDir when empty.
	InitramfsRecordDir string
	// WorkerSocket, when set, is the worker socket
	// (kmsagent-worker.socket) every worker is started through, outside
	// this process's namespaces and cgroup, instead of as a child.
	WorkerSocket string
	// Confined says this process runs in a mount namespace of its own
	// (the daemon in its systemd sandbox): Mount and Close run in a
	// service worker started through WorkerSocket, and Status reads the
	// host's mount table. See confined.go.
	Confined bool
}

// Note is a message for the admin from a verb that went on.
type Note struct {
	Warning bool // a warning, rather than a report of something done
	Message string
}

// Service runs the verbs.
type Service struct {
	o Options

	mu  sync.Mutex
	cfg *config.Config
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Config == nil && o.LoadConfig == nil {
		return nil, errors.New("service: neither a configuration nor a way to load one")
	}
	if o.RunDir == "" {
		o.RunDir = share.DefaultRunDir
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Confined && o.WorkerSocket == "" {
		return nil, errors.New("service: confined without a worker socket: nothing could mount for the host")
	}
	if o.Executable == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
		o.Executable = self
	}
	return &Service{o: o, cfg: o.Config}, nil
}

// config returns the configuration, loading it on first use.
func (s *Service) config() (*config.Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg != nil {
		return s.cfg, nil
	}
	cfg, err := s.o.LoadConfig()
	if err != nil {
		return nil, err
	}
	s.cfg = cfg
	return cfg, nil
}

// configPath is the --config of the workers.
func (s *Service) configPath() string {
	if s.o.ConfigPath != "" {
		return s.o.ConfigPath
	}
	if s.o.Config != nil {
		return s.o.Config.Path
	}
	return ""
}

func (s *Service) notify(n Note) {
	if n.Warning {
		s.o.Logger.Warn(n.Message)
	} else {
		s.o.Logger.Info(n.Message)
	}
	if s.o.Notify != nil {
		s.o.Notify(n)
	}
}

// OpenKMS opens the configured KMS provider.
func (s *Service) OpenKMS(ctx context.Context) (kmsclient.KMS, error) {
	k, _, err := s.OpenKMSRegion(ctx)
	return k, err
}

// OpenKMSRegion opens the configured KMS and returns the region the
// configuration names, which tokens record next to the key id.
func (s *Service) OpenKMSRegion(ctx context.Context) (kmsclient.KMS, string, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, "", err
	}
	retry := kmsclient.DefaultRetry
	if s.o.KMSAttempts > 0 {
		retry.MaxAttempts = s.o.KMSAttempts
	}
	k, err := kmsconn.OpenRetry(ctx, cfg.KMS, retry)
	if err != nil {
		return nil, "", err
	}
	region := ""
	switch cfg.KMS.Provider {
	case config.ProviderHuaweiCloud:
		region = cfg.KMS.HuaweiCloud.Region
	case config.ProviderAWS:
		region = cfg.KMS.AWS.Region
		for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
			if region == "" {
				region = os.Getenv(v)
			}
		}
	}
	return k, region, nil
}

// resolveSource turns a volume's source as configured or typed into the
// path to open: UUID=<LUKS2 UUID> and evs:<volume id> name a block device
// that package source finds (a missing device is source.ErrNotFound,
// which a daemon retries when disks appear); anything else is a path,
// used as it is (a share's directory, a device, an image file).
func resolveSource(ctx context.Context, src string) (string, error) {
	switch {
	case src == "":
		return "", errors.New("no volume source given")
	case strings.HasPrefix(src, "UUID="), strings.HasPrefix(src, "evs:"):
		return source.Resolve(ctx, src)
	}
	return src, nil
}

// ErrUnknownKind is returned by Probe for a source that is neither a
// share nor a LUKS volume.
var ErrUnknownKind = errors.New("neither a kmsagent share nor a LUKS volume")

// Probe tells the kind of the volume at source: a directory holding a
// share's envelope (kmsagent.json) or gocryptfs.diriv is a share; a block
// device or file with a LUKS header is a LUKS volume. Anything else is
// ErrUnknownKind, wrapped with what was found.
func Probe(source string) (Kind, error) {
	fi, err := os.Stat(source)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		for _, name := range []string{envelope.FileName, "gocryptfs.diriv"} {
			if _, err := os.Lstat(filepath.Join(source, name)); err == nil {
				return KindShare, nil
			}
		}
		return "", fmt.Errorf("%s: a directory without %s: %w", source, envelope.FileName, ErrUnknownKind)
	}
	f, err := volume.OpenDevice(source, false)
	if err != nil {
		return "", err
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return "", err
	}
	sigs, err := probe.Scan(f, size)
	if err != nil {
		return "", fmt.Errorf("%s: %w", source, err)
	}
	for _, sig := range sigs {
		if sig.Type == probe.TypeLUKS {
			return KindLUKS, nil
		}
	}
	if len(sigs) > 0 {
		return "", fmt.Errorf("%s: holds %s: %w", source, probe.Names(sigs), ErrUnknownKind)
	}
	return "", fmt.Errorf("%s: %w", source, ErrUnknownKind)
}

// kindOf is the kind a verb treats source as: spec's when given, else
// the probed one. A source Probe cannot place goes to the reader of the
// kind it looks like (a directory to the share's, anything else to the
// LUKS one), whose error says best what is wrong with it ("has no
// kmsagent.json", "no LUKS2 header").
func kindOf(kind Kind, source string) Kind {
	if kind != "" {
		return kind
	}
	if k, err := Probe(source); err == nil {
		return k
	}
	if fi, err := os.Stat(source); err == nil && fi.IsDir() {
		return KindShare
	}
	return KindLUKS
}

// KindOf is kindOf for callers that must choose before a verb runs (the
// CLI checks that options fit the kind).
func KindOf(source string) Kind { return kindOf("", source) }
