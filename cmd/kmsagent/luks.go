package main

import (
	"context"
	"flag"
	"fmt"

	"kmsagent/agent/service"
	"kmsagent/blockdev/volume"
)

// runFormatLuks formats a device. Unlike image encrypt it does not fit
// the sector size to a file system's block size: a device with a file
// system is refused without --force, and with --force the file system is
// gone (what was its data reads as noise through the new key), so there
// is nothing to fit. mkfs later run on the opened volume takes the
// device's logical block size, which is the sector size, so either size
// works for a new file system.
func runFormatLuks(ctx context.Context, env *cliEnv, args []string) error {
	o := service.FormatOptions{Kind: service.KindLUKS}
	pos, err := parseFlags(env, "format luks", "DEVICE|FILE", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&o.KeyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the volume's data key")
		fs.IntVar(&o.SectorSize, "sector-size", volume.DefaultSectorSize, "encryption sector size in bytes, 512 or 4096")
		fs.StringVar(&o.RecoveryPassphraseFile, "recovery-passphrase-file", "", "also add a keyslot for the passphrase in FILE (exact bytes, as cryptsetup --key-file): the break-glass path with stock cryptsetup")
		fs.UintVar(&o.RecoveryMemoryKiB, "pbkdf-memory", 0, "argon2id memory of the recovery keyslot in KiB (default 1 GiB, at most half the RAM)")
		fs.BoolVar(&o.Force, "force", false, "format even if the device holds a LUKS header, a file system or a partition table")
	})
	if err != nil {
		return err
	}
	if o.KeyID == "" {
		return usagef("format luks: --key-id is required")
	}
	if o.SectorSize != 512 && o.SectorSize != 4096 {
		return usagef("format luks: --sector-size must be 512 or 4096")
	}
	o.Source = pos[0]
	svc, err := newService(env)
	if err != nil {
		return err
	}
	res, err := svc.Format(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: LUKS2 volume %s, %d-byte sectors, key wrapped by %s key %s (keyslot %d, token %d)", o.Source, res.UUID, res.SectorSize, res.Provider, res.KeyID, res.Keyslot, res.TokenID)
	if res.RecoveryKeyslot >= 0 {
		fmt.Fprintf(env.stdout, ", recovery passphrase in keyslot %d", res.RecoveryKeyslot)
	}
	fmt.Fprintln(env.stdout)
	return nil
}

func runEnroll(ctx context.Context, env *cliEnv, args []string) error {
	var o service.EnrollOptions
	pos, err := parseFlags(env, "enroll", "DEVICE|FILE", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&o.KeyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the new data key")
		fs.StringVar(&o.PassphraseFile, "passphrase-file", "", "a passphrase that opens a keyslot of the volume (exact bytes, as cryptsetup --key-file)")
	})
	if err != nil {
		return err
	}
	if o.KeyID == "" || o.PassphraseFile == "" {
		return usagef("enroll: --key-id and --passphrase-file are required")
	}
	o.Source = pos[0]
	svc, err := newService(env)
	if err != nil {
		return err
	}
	res, err := svc.Enroll(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: LUKS2 volume %s enrolled: %s key %s opens keyslot %d (token %d); the data is unchanged\n", o.Source, res.UUID, res.Provider, res.KeyID, res.Keyslot, res.TokenID)
	return nil
}

func runUnenroll(ctx context.Context, env *cliEnv, args []string) error {
	pos, err := parseFlags(env, "unenroll", "DEVICE|FILE", args, 1, 1, nil)
	if err != nil {
		return err
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	removed, err := svc.Unenroll(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: kmsagent token and keyslot %v removed; the remaining keyslots still open the volume\n", pos[0], removed)
	return nil
}
