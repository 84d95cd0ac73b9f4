package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"kmsagent/agent/config"
	"kmsagent/agent/kmsconn"
	"kmsagent/agent/secret"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// maxPassphraseFile bounds passphrase files: cryptsetup allows 8 MiB key
// files, but the bytes are held in locked memory and real passphrases
// are short.
const maxPassphraseFile = 64 << 10

// openKMSRegion opens the configured KMS and returns the region the
// configuration names, which tokens record next to the key id.
func openKMSRegion(ctx context.Context, env *cliEnv) (kmsclient.KMS, string, error) {
	cfg, err := loadConfig(env)
	if err != nil {
		return nil, "", err
	}
	k, err := kmsconn.Open(ctx, cfg.KMS)
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

// deviceError prefixes err with the device and adds what the admin can
// do about a device kmsagent refused to write to.
func deviceError(path string, err error) error {
	var existing *volume.ExistingDataError
	var ambiguous *volume.AmbiguousError
	switch {
	case errors.As(err, &existing):
		return fmt.Errorf("%s: %w; pass --force if that is intended", path, err)
	case errors.As(err, &ambiguous) && ambiguous.LUKSVersion() == 1:
		return fmt.Errorf("%s: %w; kmsagent writes only LUKS2: if the LUKS1 volume is in use, convert it first (cryptsetup convert --type luks2 %s), if it is stale, erase it (wipefs --offset 0x0 %s)", path, err, path, path)
	case errors.As(err, &ambiguous):
		return fmt.Errorf("%s: %w; find out which is in use (wipefs %s lists the signatures without erasing any), then erase the stale ones with wipefs --offset OFFSET %s", path, err, path, path)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// readPassphrase reads a passphrase file byte for byte, as cryptsetup's
// --key-file does (a trailing newline is part of the passphrase).
func readPassphrase(path string) (*secret.Key, error) {
	k, err := secret.ReadFile(path, maxPassphraseFile)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// runFormatLuks formats a device. Unlike image encrypt it does not fit
// the sector size to a file system's block size: a device with a file
// system is refused without --force, and with --force the file system is
// gone (what was its data reads as noise through the new key), so there
// is nothing to fit. mkfs later run on the opened volume takes the
// device's logical block size, which is the sector size, so either size
// works for a new file system.
func runFormatLuks(ctx context.Context, env *cliEnv, args []string) error {
	var keyID, recoveryFile string
	var sectorSize int
	var memoryKiB uint
	var force bool
	pos, err := parseFlags(env, "format luks", "DEVICE|FILE", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the volume's data key")
		fs.IntVar(&sectorSize, "sector-size", volume.DefaultSectorSize, "encryption sector size in bytes, 512 or 4096")
		fs.StringVar(&recoveryFile, "recovery-passphrase-file", "", "also add a keyslot for the passphrase in FILE (exact bytes, as cryptsetup --key-file): the break-glass path with stock cryptsetup")
		fs.UintVar(&memoryKiB, "pbkdf-memory", 0, "argon2id memory of the recovery keyslot in KiB (default 1 GiB, at most half the RAM)")
		fs.BoolVar(&force, "force", false, "format even if the device holds a LUKS header, a file system or a partition table")
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("format luks: --key-id is required")
	}
	if sectorSize != 512 && sectorSize != 4096 {
		return usagef("format luks: --sector-size must be 512 or 4096")
	}
	path := pos[0]
	o := volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: keyID, SectorSize: sectorSize}, Force: force}
	if recoveryFile != "" {
		pass, err := readPassphrase(recoveryFile)
		if err != nil {
			return err
		}
		defer pass.Wipe()
		o.RecoveryPassphrase = pass.Bytes()
		if memoryKiB > 0 {
			o.RecoveryKDF = volume.DefaultRecoveryKDF()
			o.RecoveryKDF.MemoryKiB = uint32(min(memoryKiB, 4<<20))
		}
	}
	dev, err := volume.OpenDevice(path, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	kms, region, err := openKMSRegion(ctx, env)
	if err != nil {
		return err
	}
	o.Region = region
	res, err := volume.Format(ctx, dev, kms, o)
	if err != nil {
		return deviceError(path, err)
	}
	fmt.Fprintf(env.stdout, "%s: LUKS2 volume %s, %d-byte sectors, key wrapped by %s key %s (keyslot %d, token %d)", path, res.UUID, sectorSize, kms.Provider(), res.KeyID, res.Keyslot, res.TokenID)
	if res.RecoveryKeyslot >= 0 {
		fmt.Fprintf(env.stdout, ", recovery passphrase in keyslot %d", res.RecoveryKeyslot)
	}
	fmt.Fprintln(env.stdout)
	return nil
}

// runEnroll binds an existing volume to the KMS. The file system is
// inside the encrypted payload and its sector size was chosen when the
// volume was formatted; enroll only adds a keyslot and a token and
// changes neither, so it cannot make a mountable volume unmountable and
// checks no block size.
func runEnroll(ctx context.Context, env *cliEnv, args []string) error {
	var keyID, passFile string
	pos, err := parseFlags(env, "enroll", "DEVICE|FILE", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the new data key")
		fs.StringVar(&passFile, "passphrase-file", "", "a passphrase that opens a keyslot of the volume (exact bytes, as cryptsetup --key-file)")
	})
	if err != nil {
		return err
	}
	if keyID == "" || passFile == "" {
		return usagef("enroll: --key-id and --passphrase-file are required")
	}
	path := pos[0]
	pass, err := readPassphrase(passFile)
	if err != nil {
		return err
	}
	defer pass.Wipe()
	dev, err := volume.OpenDevice(path, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	kms, region, err := openKMSRegion(ctx, env)
	if err != nil {
		return err
	}
	res, err := volume.Enroll(ctx, dev, kms, pass.Bytes(), volume.EnrollOptions{KeyID: keyID, Region: region})
	if err != nil {
		return deviceError(path, err)
	}
	fmt.Fprintf(env.stdout, "%s: LUKS2 volume %s enrolled: %s key %s opens keyslot %d (token %d); the data is unchanged\n", path, res.UUID, kms.Provider(), res.KeyID, res.Keyslot, res.TokenID)
	return nil
}

func runUnenroll(ctx context.Context, env *cliEnv, args []string) error {
	pos, err := parseFlags(env, "unenroll", "DEVICE|FILE", args, 1, 1, nil)
	if err != nil {
		return err
	}
	path := pos[0]
	dev, err := volume.OpenDevice(path, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	removed, err := volume.Unenroll(ctx, dev)
	if err != nil {
		return deviceError(path, err)
	}
	fmt.Fprintf(env.stdout, "%s: kmsagent token and keyslot %v removed; the remaining keyslots still open the volume\n", path, removed)
	return nil
}

// runRewrapLuks re-wraps a LUKS2 volume's data key; only the token
// changes.
func runRewrapLuks(ctx context.Context, env *cliEnv, path, keyID string) error {
	dev, err := volume.OpenDevice(path, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	kms, err := openKMS(ctx, env)
	if err != nil {
		return err
	}
	old, err := volume.Rewrap(ctx, dev, kms, keyID)
	if err != nil {
		return deviceError(path, err)
	}
	fmt.Fprintf(env.stdout, "%s: data key re-wrapped from %s to %s; only the token changed\n", path, strings.Join(old, ", "), keyID)
	return nil
}

// runExportKeyLuks prints a LUKS2 volume key; runExportKey has checked
// the caller is root.
func runExportKeyLuks(ctx context.Context, env *cliEnv, path, passFile string) error {
	var pass *secret.Key
	if passFile != "" {
		var err error
		if pass, err = readPassphrase(passFile); err != nil {
			return err
		}
		defer pass.Wipe()
	}
	dev, err := volume.OpenDevice(path, false)
	if err != nil {
		return err
	}
	defer dev.Close()
	var vk *secret.Key
	if pass != nil {
		vk, err = volume.OpenWithPassphrase(dev, pass.Bytes())
	} else {
		var kms kmsclient.KMS
		if kms, err = openKMS(ctx, env); err != nil {
			return err
		}
		vk, err = volume.Unlock(ctx, dev, kms)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer vk.Wipe()
	fmt.Fprintf(env.stderr, "kmsagent: WARNING: printing the volume key of %s; anyone who sees it can read the volume without the KMS or a passphrase\n", path)
	out := make([]byte, hex.EncodedLen(vk.Len())+1)
	hex.Encode(out, vk.Bytes())
	out[len(out)-1] = '\n'
	_, err = env.stdout.Write(out)
	clear(out)
	return err
}
