package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
)

// Commands that act on both kinds of volume and are not split by kind on
// the command line (export-key, rewrap) pick the handler by what the path
// is: a directory is a share, anything else a LUKS2 device or image.

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
	mp, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if found, err := runUmountShare(ctx, env, mp, lazy); found {
		return err
	}
	return runUmountLuks(ctx, env, pos[0], lazy)
}

func runExportKey(ctx context.Context, env *cliEnv, args []string) error {
	var passFile string
	pos, err := parseFlags(env, "export-key", "PATH", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&passFile, "passphrase-file", "", "LUKS2: open a keyslot with this passphrase instead of the KMS token")
	})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("export-key prints a master key and is for root only; run it with sudo")
	}
	if isDir(pos[0]) {
		if passFile != "" {
			return usagef("export-key: --passphrase-file is for LUKS2 volumes; a share's key comes from its envelope")
		}
		return runExportKeyShare(ctx, env, pos[0])
	}
	return runExportKeyLuks(ctx, env, pos[0], passFile)
}

// rewrapCmd is rewrap, also named "image rewrap".
func rewrapCmd(name string) func(ctx context.Context, env *cliEnv, args []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error { return runRewrap(ctx, env, name, args) }
}

func runRewrap(ctx context.Context, env *cliEnv, name string, args []string) error {
	var keyID string
	pos, err := parseFlags(env, name, "IMAGE|DEVICE|SHARE-DIR", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key to wrap the volume key under (the same key re-wraps under its current version)")
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("%s: --key-id is required", name)
	}
	if isDir(pos[0]) {
		return runRewrapShare(ctx, env, pos[0], keyID)
	}
	return runRewrapLuks(ctx, env, pos[0], keyID)
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
