package service

import (
	"context"
	"errors"
	"fmt"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
	"kmsagent/kmsclient"
)

// maxPassphraseFile bounds passphrase files: cryptsetup allows 8 MiB key
// files, but the bytes are held in locked memory and real passphrases
// are short.
const maxPassphraseFile = 64 << 10

// ReadPassphrase reads a passphrase file byte for byte, as cryptsetup's
// --key-file does (a trailing newline is part of the passphrase).
func ReadPassphrase(path string) (*secret.Key, error) {
	return secret.ReadFile(path, maxPassphraseFile)
}

// maxMasterKeyFile bounds a share's imported master key file (hex).
const maxMasterKeyFile = 4096

// ErrKindMismatch is an option given for the other kind of volume.
var ErrKindMismatch = errors.New("option is for the other kind of volume")

// SourceError is a failure of a verb on a volume's source, which it
// names.
type SourceError struct {
	Source string
	Err    error
}

func (e *SourceError) Error() string { return e.Source + ": " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// FormatOptions are the options of Format.
type FormatOptions struct {
	Kind   Kind // required: formatting creates the kind
	Source string
	KeyID  string
	// Force: a share: format a non-empty directory or replace an
	// envelope (the old one is kept as a backup); with an imported key,
	// adopt a tree too empty to check the key against. LUKS: format a
	// device that holds a LUKS header, a file system or a partition
	// table.
	Force bool
	// MasterKeyFile (share) adopts an existing gocryptfs directory whose
	// master key (hex) is in the file.
	MasterKeyFile string
	// SectorSize (LUKS) is 512 or 4096; volume.DefaultSectorSize when 0.
	SectorSize int
	// RecoveryPassphraseFile (LUKS) adds a keyslot for the passphrase in
	// the file (exact bytes, as cryptsetup --key-file).
	RecoveryPassphraseFile string
	// RecoveryMemoryKiB is the argon2id memory of the recovery keyslot;
	// the default when 0.
	RecoveryMemoryKiB uint
}

// Formatted is what Format made.
type Formatted struct {
	Kind            Kind
	UUID            string
	Provider, KeyID string
	// LUKS:
	SectorSize      int
	Keyslot         int
	TokenID         int
	RecoveryKeyslot int // -1 without one
}

// Format initialises a share or a LUKS volume with a key from the KMS.
func (s *Service) Format(ctx context.Context, o FormatOptions) (Formatted, error) {
	src, err := resolveSource(ctx, o.Source)
	if err != nil {
		return Formatted{}, err
	}
	switch o.Kind {
	case KindShare:
		return s.formatShare(ctx, src, o)
	case KindLUKS:
		return s.formatLUKS(ctx, src, o)
	}
	return Formatted{}, fmt.Errorf("format: unknown kind %q", o.Kind)
}

func (s *Service) formatShare(ctx context.Context, dir string, o FormatOptions) (Formatted, error) {
	kms, err := s.OpenKMS(ctx)
	if err != nil {
		return Formatted{}, err
	}
	var e *envelope.Envelope
	if o.MasterKeyFile != "" {
		raw, err := secret.ReadFile(o.MasterKeyFile, maxMasterKeyFile)
		if err != nil {
			return Formatted{}, err
		}
		master, err := share.ParseMasterKey(raw.Bytes())
		raw.Wipe()
		if err != nil {
			return Formatted{}, fmt.Errorf("%s: %w", o.MasterKeyFile, err)
		}
		defer master.Wipe()
		if e, err = share.Import(ctx, kms, dir, o.KeyID, master, o.Force); err != nil {
			return Formatted{}, err
		}
	} else if e, err = share.Format(ctx, kms, dir, o.KeyID, o.Force); err != nil {
		return Formatted{}, err
	}
	return Formatted{Kind: KindShare, UUID: e.VolumeUUID, Provider: e.KMS.Provider, KeyID: e.KMS.KeyID, RecoveryKeyslot: -1}, nil
}

func (s *Service) formatLUKS(ctx context.Context, path string, o FormatOptions) (Formatted, error) {
	if o.SectorSize == 0 {
		o.SectorSize = volume.DefaultSectorSize
	}
	fo := volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: o.KeyID, SectorSize: o.SectorSize}, Force: o.Force}
	if o.RecoveryPassphraseFile != "" {
		pass, err := ReadPassphrase(o.RecoveryPassphraseFile)
		if err != nil {
			return Formatted{}, err
		}
		defer pass.Wipe()
		fo.RecoveryPassphrase = pass.Bytes()
		if o.RecoveryMemoryKiB > 0 {
			fo.RecoveryKDF = volume.DefaultRecoveryKDF()
			fo.RecoveryKDF.MemoryKiB = uint32(min(o.RecoveryMemoryKiB, 4<<20))
		}
	}
	dev, err := volume.OpenDevice(path, true)
	if err != nil {
		return Formatted{}, err
	}
	defer dev.Close()
	kms, region, err := s.OpenKMSRegion(ctx)
	if err != nil {
		return Formatted{}, err
	}
	fo.Region = region
	res, err := volume.Format(ctx, dev, kms, fo)
	if err != nil {
		return Formatted{}, &SourceError{Source: path, Err: err}
	}
	return Formatted{Kind: KindLUKS, UUID: res.UUID, Provider: kms.Provider(), KeyID: res.KeyID, SectorSize: o.SectorSize,
		Keyslot: res.Keyslot, TokenID: res.TokenID, RecoveryKeyslot: res.RecoveryKeyslot}, nil
}

// RewrapOptions are the options of Rewrap.
type RewrapOptions struct {
	Kind   Kind // probed when empty
	Source string
	KeyID  string // the key to wrap under; the same key re-wraps under its current version
}

// Rewrapped is what Rewrap did.
type Rewrapped struct {
	Kind      Kind
	OldKeyIDs []string
}

// Rewrap re-wraps a volume's key under another KMS key or key version;
// the data and the key itself do not change (for LUKS only the token
// does).
func (s *Service) Rewrap(ctx context.Context, o RewrapOptions) (Rewrapped, error) {
	src, err := resolveSource(ctx, o.Source)
	if err != nil {
		return Rewrapped{}, err
	}
	if kindOf(o.Kind, src) == KindShare {
		if _, err := envelope.Read(src); err != nil {
			return Rewrapped{}, err
		}
		kms, err := s.OpenKMS(ctx)
		if err != nil {
			return Rewrapped{}, err
		}
		_, old, err := share.Rewrap(ctx, kms, src, o.KeyID)
		if err != nil {
			return Rewrapped{}, err
		}
		return Rewrapped{Kind: KindShare, OldKeyIDs: []string{old}}, nil
	}
	dev, err := volume.OpenDevice(src, true)
	if err != nil {
		return Rewrapped{}, err
	}
	defer dev.Close()
	kms, err := s.OpenKMS(ctx)
	if err != nil {
		return Rewrapped{}, err
	}
	old, err := volume.Rewrap(ctx, dev, kms, o.KeyID)
	if err != nil {
		return Rewrapped{}, &SourceError{Source: src, Err: err}
	}
	return Rewrapped{Kind: KindLUKS, OldKeyIDs: old}, nil
}

// ExportKeyOptions are the options of ExportKey.
type ExportKeyOptions struct {
	Kind   Kind // probed when empty
	Source string
	// PassphraseFile (LUKS) opens a keyslot with the passphrase in the
	// file instead of the KMS token.
	PassphraseFile string
}

// ExportedKey is a volume's key, which the caller must Wipe.
type ExportedKey struct {
	Kind Kind
	UUID string // the share's; "" for LUKS
	Key  *secret.Key
}

// ExportKey unwraps a volume's key for break-glass use. Unlike every
// other verb it brings the key into this process: the caller checks it is
// allowed (root), prints the key and wipes it.
func (s *Service) ExportKey(ctx context.Context, o ExportKeyOptions) (ExportedKey, error) {
	src, err := resolveSource(ctx, o.Source)
	if err != nil {
		return ExportedKey{}, err
	}
	if kindOf(o.Kind, src) == KindShare {
		if o.PassphraseFile != "" {
			return ExportedKey{}, fmt.Errorf("a passphrase is for LUKS2 volumes; a share's key comes from its envelope: %w", ErrKindMismatch)
		}
		e, err := envelope.Read(src)
		if err != nil {
			return ExportedKey{}, err
		}
		kms, err := s.OpenKMS(ctx)
		if err != nil {
			return ExportedKey{}, err
		}
		master, err := e.Unwrap(ctx, kms)
		if err != nil {
			return ExportedKey{}, err
		}
		return ExportedKey{Kind: KindShare, UUID: e.VolumeUUID, Key: master}, nil
	}
	var pass *secret.Key
	if o.PassphraseFile != "" {
		if pass, err = ReadPassphrase(o.PassphraseFile); err != nil {
			return ExportedKey{}, err
		}
		defer pass.Wipe()
	}
	dev, err := volume.OpenDevice(src, false)
	if err != nil {
		return ExportedKey{}, err
	}
	defer dev.Close()
	var vk *secret.Key
	if pass != nil {
		vk, err = volume.OpenWithPassphrase(dev, pass.Bytes())
	} else {
		var kms kmsclient.KMS
		if kms, err = s.OpenKMS(ctx); err != nil {
			return ExportedKey{}, err
		}
		vk, err = volume.Unlock(ctx, dev, kms)
	}
	if err != nil {
		return ExportedKey{}, &SourceError{Source: src, Err: err}
	}
	return ExportedKey{Kind: KindLUKS, Key: vk}, nil
}

// EnrollOptions are the options of Enroll.
type EnrollOptions struct {
	Source string
	KeyID  string
	// PassphraseFile holds a passphrase that opens a keyslot of the
	// volume (exact bytes, as cryptsetup --key-file).
	PassphraseFile string
}

// Enrolled is what Enroll did.
type Enrolled struct {
	UUID            string
	Provider, KeyID string
	Keyslot         int
	TokenID         int
}

// Enroll binds an existing LUKS2 volume to the KMS. The file system is
// inside the encrypted payload and its sector size was chosen when the
// volume was formatted; enroll only adds a keyslot and a token and
// changes neither, so it cannot make a mountable volume unmountable and
// checks no block size.
func (s *Service) Enroll(ctx context.Context, o EnrollOptions) (Enrolled, error) {
	src, err := resolveSource(ctx, o.Source)
	if err != nil {
		return Enrolled{}, err
	}
	pass, err := ReadPassphrase(o.PassphraseFile)
	if err != nil {
		return Enrolled{}, err
	}
	defer pass.Wipe()
	dev, err := volume.OpenDevice(src, true)
	if err != nil {
		return Enrolled{}, err
	}
	defer dev.Close()
	kms, region, err := s.OpenKMSRegion(ctx)
	if err != nil {
		return Enrolled{}, err
	}
	res, err := volume.Enroll(ctx, dev, kms, pass.Bytes(), volume.EnrollOptions{KeyID: o.KeyID, Region: region})
	if err != nil {
		return Enrolled{}, &SourceError{Source: src, Err: err}
	}
	return Enrolled{UUID: res.UUID, Provider: kms.Provider(), KeyID: res.KeyID, Keyslot: res.Keyslot, TokenID: res.TokenID}, nil
}

// Unenroll removes the kmsagent token and keyslot from a LUKS2 volume
// and returns the keyslots removed.
func (s *Service) Unenroll(ctx context.Context, source string) ([]int, error) {
	src, err := resolveSource(ctx, source)
	if err != nil {
		return nil, err
	}
	dev, err := volume.OpenDevice(src, true)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	removed, err := volume.Unenroll(ctx, dev)
	if err != nil {
		return nil, &SourceError{Source: src, Err: err}
	}
	return removed, nil
}
