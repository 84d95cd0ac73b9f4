// Package share manages encrypted shares as the admin sees them: format a
// cipher directory, adopt an existing gocryptfs one, verify a master key
// against a tree, and keep one mount per share per host.
package share

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	cryptfs "kmsagent/fuse/fs"
	"kmsagent/fuse/nametransform"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/secret"
)

// Format initialises dir as a new share whose master key the KMS generates
// under keyID. dir must be empty unless force is set; force never
// overwrites a file: an existing envelope is kept as a backup next to the
// new one, and an existing gocryptfs.diriv is kept.
func Format(ctx context.Context, kms kmsclient.KMS, dir, keyID string, force bool) (*envelope.Envelope, error) {
	d, err := openCipherDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := checkEmpty(d, dir, force); err != nil {
		return nil, err
	}
	e, master, err := envelope.New(ctx, kms, keyID)
	if err != nil {
		return nil, err
	}
	master.Wipe()
	if err := install(d, dir, e, force); err != nil {
		return nil, err
	}
	return e, nil
}

// Import adopts an existing gocryptfs tree (default v2 flags) by wrapping
// its master key under keyID. Nothing but the envelope is written. The key
// must authenticate file content or decrypt enough names in the tree
// (cryptfs.CheckKey), so a wrong key is refused before it is wrapped: once
// wrapped, every mount would trust it and show an empty directory. A tree
// with too little in it to tell is refused too (cryptfs.ErrKeyUnverified)
// unless force is set; a key the tree shows wrong is refused even then.
func Import(ctx context.Context, kms kmsclient.KMS, dir, keyID string, master *secret.Key, force bool) (*envelope.Envelope, error) {
	d, err := openCipherDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := checkGocryptfsConf(dir); err != nil {
		return nil, err
	}
	if _, err := nametransform.ReadDirIVAt(int(d.Fd())); err != nil {
		return nil, fmt.Errorf("%s is not a gocryptfs v2 directory (%v); run kmsagent format fuse without --import-master-key-file for a new share", dir, err)
	}
	if err := checkKey(dir, master); err != nil {
		switch {
		case errors.Is(err, cryptfs.ErrWrongKey):
			return nil, fmt.Errorf("wrong master key for this directory, nothing written: %w", err)
		case errors.Is(err, cryptfs.ErrKeyUnverified) && force:
			// The admin vouches for the key of a tree that cannot.
		default:
			return nil, fmt.Errorf("the master key cannot be checked against %s, nothing written: %w", dir, err)
		}
	}
	e, err := envelope.Import(ctx, kms, keyID, master)
	if err != nil {
		return nil, err
	}
	if err := install(d, dir, e, force); err != nil {
		return nil, err
	}
	return e, nil
}

// install writes the root diriv (unless there is one) and the envelope.
func install(d *os.File, dir string, e *envelope.Envelope, force bool) error {
	if _, err := nametransform.ReadDirIVAt(int(d.Fd())); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", dir, err)
		}
		if err := nametransform.WriteDirIVAt(int(d.Fd())); err != nil {
			return fmt.Errorf("%s: write %s: %w", dir, nametransform.DirIVFilename, err)
		}
	}
	path := filepath.Join(dir, envelope.FileName)
	if _, err := os.Lstat(path); err == nil {
		if !force {
			return fmt.Errorf("%s already holds a share (%s); pass --force to replace the envelope (the old one is kept as a backup)", dir, envelope.FileName)
		}
		backup := path + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Link(path, backup); err != nil {
			return fmt.Errorf("back up the old envelope: %w", err)
		}
	}
	return e.Write(dir, force)
}

func openCipherDir(dir string) (*os.File, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("cipher directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("cipher directory: %w", err)
	}
	return d, nil
}

// checkEmpty refuses a directory with anything in it but lost+found, which
// a fresh ext4 file system has.
func checkEmpty(d *os.File, dir string, force bool) error {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == "lost+found" })
	if len(names) > 0 && !force {
		slices.Sort(names)
		return fmt.Errorf("%s is not empty (%s, ...); format an empty directory, or pass --force to format it anyway (nothing in it is overwritten)", dir, names[0])
	}
	return nil
}

// checkGocryptfsConf refuses a tree whose gocryptfs.conf lists other
// feature flags than the v2 defaults we read, when the file is there.
func checkGocryptfsConf(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "gocryptfs.conf"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read gocryptfs.conf: %w", err)
	}
	var conf struct {
		Version      int
		FeatureFlags []string
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		return fmt.Errorf("%s/gocryptfs.conf is not valid JSON: %v", dir, err)
	}
	want := slices.Sorted(slices.Values(envelope.FeatureFlags))
	got := slices.Sorted(slices.Values(conf.FeatureFlags))
	if conf.Version != 2 || !slices.Equal(got, want) {
		return fmt.Errorf("%s was made with gocryptfs options this agent does not serve (version %d, flags %s); only the default v2 flags %s are supported",
			dir, conf.Version, strings.Join(conf.FeatureFlags, " "), strings.Join(envelope.FeatureFlags, " "))
	}
	return nil
}

// ParseMasterKey reads a master key as gocryptfs prints it: 64 hex
// digits, optionally in dash-separated groups, surrounding space ignored.
// b is zeroed.
func ParseMasterKey(b []byte) (*secret.Key, error) {
	defer secret.Zero(b)
	digits := make([]byte, 0, len(b))
	defer func() { secret.Zero(digits) }()
	for _, c := range b {
		switch {
		case c == '-' || c == ' ' || c == '\n' || c == '\r' || c == '\t':
		default:
			digits = append(digits, c)
		}
	}
	if len(digits) != 2*cryptocore.KeyLen {
		return nil, fmt.Errorf("master key file holds %d hex digits, want %d (as gocryptfs -init or gocryptfs-xray -dumpmasterkey prints it)", len(digits), 2*cryptocore.KeyLen)
	}
	k, err := secret.New(cryptocore.KeyLen)
	if err != nil {
		return nil, err
	}
	if _, err := hex.Decode(k.Bytes(), digits); err != nil {
		k.Wipe()
		return nil, errors.New("master key file is not hex")
	}
	return k, nil
}

// checkKey tells whether master is the key of the tree in dir; see
// cryptfs.CheckKey.
func checkKey(dir string, master *secret.Key) error {
	core, err := cryptocore.New(master)
	if err != nil {
		return err
	}
	defer core.Wipe()
	return cryptfs.CheckKey(dir, core)
}
