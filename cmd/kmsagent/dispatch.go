package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
)

// Commands that act on both kinds of volume pick the handler by the kind
// named first (format, mount) or by what the path is (export-key, rewrap):
// a directory is a share, anything else a LUKS2 device or image.

func runFormat(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "fuse":
			return runFormatFuse(ctx, env, args[1:])
		case "luks":
			return runFormatLuks(ctx, env, args[1:])
		}
	}
	return usagef("usage: kmsagent format fuse DIR --key-id ID | format luks DEVICE|FILE --key-id ID; see kmsagent format fuse --help")
}

func runMount(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "fuse":
			return runMountFuse(ctx, env, args[1:])
		case "luks":
			return runMountLuks(ctx, env, args[1:])
		}
	}
	return usagef("usage: kmsagent mount fuse DIR MOUNTPOINT [-o OPTIONS] | mount luks DEVICE [MOUNTPOINT] [--name NAME]")
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
	mp, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if found, err := runUmountShare(ctx, mp, lazy); found {
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

func runRewrap(ctx context.Context, env *cliEnv, args []string) error {
	var keyID string
	pos, err := parseFlags(env, "rewrap", "IMAGE|DEVICE|SHARE-DIR", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key to wrap the volume key under (the same key re-wraps under its current version)")
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("rewrap: --key-id is required")
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
