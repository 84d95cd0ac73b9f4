package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"kmsagent/agent/config"
	"kmsagent/agent/service"
	"kmsagent/blockdev/image"
	"kmsagent/blockdev/volume"
)

// newService is the volume service as the commands use it: the
// configuration is loaded when a verb first needs the KMS, workers get
// the same --config, and what a worker wants an admin to see goes to
// stderr.
func newService(env *cliEnv) (*service.Service, error) {
	return newServiceWith(env, nil, "")
}

func newServiceLogger(env *cliEnv, log *slog.Logger) (*service.Service, error) {
	return newServiceWith(env, log, "")
}

// newWorkerService is the service of a worker, whose parent named the
// run directory of shares and how often to try a KMS call (0: the
// default).
func newWorkerService(env *cliEnv, runDir string, kmsAttempts int) (*service.Service, error) {
	return service.New(workerOptions(env, nil, runDir, kmsAttempts))
}

func newServiceWith(env *cliEnv, log *slog.Logger, runDir string) (*service.Service, error) {
	return service.New(workerOptions(env, log, runDir, 0))
}

func workerOptions(env *cliEnv, log *slog.Logger, runDir string, kmsAttempts int) service.Options {
	return service.Options{
		LoadConfig:  func() (*config.Config, error) { return loadConfig(env) },
		ConfigPath:  absConfigPath(env.configFlag),
		RunDir:      runDir,
		Logger:      log,
		KMSAttempts: kmsAttempts,
		Notify: func(n service.Note) {
			if n.Warning {
				fmt.Fprintf(env.stderr, "kmsagent: warning: %s\n", n.Message)
			} else {
				fmt.Fprintf(env.stderr, "kmsagent: %s\n", n.Message)
			}
		},
	}
}

// runUmount closes a share mount, or a block volume by mount point or
// device-mapper name.
func runUmount(ctx context.Context, env *cliEnv, args []string) error {
	var lazy bool
	pos, err := parseFlags(env, "umount", "MOUNTPOINT|NAME", args, 1, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&lazy, "lazy", false, "detach now and finish when the mount is no longer busy")
	})
	if err != nil {
		return err
	}
	if handled, err := umountThroughDaemon(ctx, env, pos[0], lazy); handled {
		return err
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	res, err := svc.Close(ctx, pos[0], lazy)
	for _, mp := range res.Mountpoints {
		fmt.Fprintf(env.stdout, "%s: unmounted\n", mp)
	}
	if err != nil {
		return err
	}
	switch {
	case res.Kind == service.KindShare && res.Stale:
		fmt.Fprintf(env.stdout, "%s: removed a stale mount (its worker had died)\n", res.Target)
	case res.Kind == service.KindShare && res.Detached:
		fmt.Fprintf(env.stdout, "%s: detached; its worker serves the files still open and exits, wiping its keys, once they are closed (see kmsagent status)\n", res.Target)
	case res.Kind == service.KindShare:
	case res.Deferred:
		fmt.Fprintf(env.stdout, "%s: still in use; marked for removal when its last user closes it (the key stays in the kernel until then)\n", res.Target)
	case res.Loop != "" && !res.LoopDetached:
		fmt.Fprintf(env.stdout, "%s: closed, key wiped; %s is still attached (not ours or still in use)\n", res.Target, res.Loop)
	default:
		fmt.Fprintf(env.stdout, "%s: closed, key wiped\n", res.Target)
	}
	return nil
}

func runExportKey(ctx context.Context, env *cliEnv, args []string) error {
	o := service.ExportKeyOptions{}
	pos, err := parseFlags(env, "export-key", "PATH", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&o.PassphraseFile, "passphrase-file", "", "LUKS2: open a keyslot with this passphrase instead of the KMS token")
	})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("export-key prints a master key and is for root only; run it with sudo")
	}
	o.Source = pos[0]
	o.Kind = service.KindOf(o.Source)
	if o.Kind == service.KindShare && o.PassphraseFile != "" {
		return usagef("export-key: --passphrase-file is for LUKS2 volumes; a share's key comes from its envelope")
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	k, err := svc.ExportKey(ctx, o)
	if err != nil {
		return err
	}
	defer k.Key.Wipe()
	if k.Kind == service.KindShare {
		fmt.Fprintf(env.stderr, "kmsagent: WARNING: printing the master key of share %s; anyone who sees it can read the share without the KMS\n", k.UUID)
	} else {
		fmt.Fprintf(env.stderr, "kmsagent: WARNING: printing the volume key of %s; anyone who sees it can read the volume without the KMS or a passphrase\n", o.Source)
	}
	out := make([]byte, hex.EncodedLen(k.Key.Len())+1)
	hex.Encode(out, k.Key.Bytes())
	out[len(out)-1] = '\n'
	_, err = env.stdout.Write(out)
	clear(out)
	return err
}

// rewrapCmd is rewrap, also named "image rewrap".
func rewrapCmd(name string) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error { return runRewrap(ctx, env, name, args) }
}

func runRewrap(ctx context.Context, env *cliEnv, name string, args []string) error {
	var keyID string
	var part int
	pos, err := parseFlags(env, name, "IMAGE|DEVICE|SHARE-DIR", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key to wrap the volume key under (the same key re-wraps under its current version)")
		fs.IntVar(&part, "partition", 0, "re-wrap the LUKS2 header of partition `N` of a disk image")
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("%s: --key-id is required", name)
	}
	if part < 0 {
		return usagef("%s: --partition must be a partition number, 1 or more", name)
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	if part > 0 {
		return rewrapPartition(ctx, env, svc, pos[0], part, keyID)
	}
	res, err := svc.Rewrap(ctx, service.RewrapOptions{Source: pos[0], KeyID: keyID})
	if err != nil {
		return err
	}
	if res.Kind == service.KindShare {
		fmt.Fprintf(env.stdout, "%s: master key re-wrapped from %s to %s\n", pos[0], strings.Join(res.OldKeyIDs, ", "), keyID)
	} else {
		fmt.Fprintf(env.stdout, "%s: data key re-wrapped from %s to %s; only the token changed\n", pos[0], strings.Join(res.OldKeyIDs, ", "), keyID)
	}
	return nil
}

// absConfigPath makes --config absolute: workers are started in / and are
// handed the path.
func absConfigPath(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// rewrapPartition re-wraps the data key of one partition of a disk
// image; as for a whole image, only the token changes.
func rewrapPartition(ctx context.Context, env *cliEnv, svc *service.Service, path string, n int, keyID string) error {
	f, err := volume.OpenDevice(path, true)
	if err != nil {
		return err
	}
	defer f.Close()
	dev, _, err := image.OpenPartition(f, n)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	kms, err := svc.OpenKMS(ctx)
	if err != nil {
		return err
	}
	old, err := volume.Rewrap(ctx, dev, kms, keyID)
	if err != nil {
		return fmt.Errorf("%s: partition %d: %w", path, n, err)
	}
	fmt.Fprintf(env.stdout, "%s: partition %d: data key re-wrapped from %s to %s; only the token changed\n", path, n, strings.Join(old, ", "), keyID)
	return nil
}
