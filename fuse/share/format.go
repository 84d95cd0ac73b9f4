// Package share manages encrypted shares as the admin sees them: format a
// cipher directory, adopt an existing gocryptfs one, verify a master key
// against a tree, and keep one mount per share per host.
//
// Format and Import work in the cipher directory through one descriptor,
// opened without following symlinks (agent/safepath): every file they
// write is created relative to it, so a directory renamed or swapped for
// a symlink by another user meanwhile cannot redirect root's writes. They
// are all or nothing: when a step fails, what they made is removed again,
// so a retry does not need --force.
//
// The cipher root is made 0700 and the envelope 0600: the wrapped key in
// it plus any KMS credential allowed to decrypt under its key give the
// master key, the volume UUID being public. A share that other hosts
// mount (NFS with root squash) is opened up by the admin, group-readable;
// envelope.Mode says how.
package share

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
	"kmsagent/agent/secret"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/nametransform"
	"kmsagent/kmsclient"
)

// RootMode is the mode Format and Import give the cipher root.
const RootMode = 0o700

// Format initialises dir as a new share whose master key the KMS generates
// under keyID, creating dir and its missing parents (0755 less the umask,
// as mkdir -p). dir must be empty unless force is set; force never
// overwrites a file: an existing envelope is kept as a backup next to the
// new one, and an existing gocryptfs.diriv is kept.
func Format(ctx context.Context, kms kmsclient.KMS, dir, keyID string, force bool) (*envelope.Envelope, error) {
	d, created, err := safepath.MkdirAll(dir)
	if err != nil {
		return nil, fmt.Errorf("cipher directory: %w", err)
	}
	defer d.Close()
	tx := &undo{d: d, dirs: created}
	defer tx.rollback()
	if err := checkEmpty(d, dir, force); err != nil {
		return nil, err
	}
	e, master, err := envelope.New(ctx, kms, keyID)
	if err != nil {
		return nil, err
	}
	master.Wipe()
	if err := install(tx, e, force); err != nil {
		return nil, err
	}
	tx.commit()
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
	d, err := safepath.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cipher directory: %w", err)
	}
	defer d.Close()
	tx := &undo{d: d}
	defer tx.rollback()
	if err := checkGocryptfsConf(d); err != nil {
		return nil, err
	}
	if _, err := nametransform.ReadDirIVAt(int(d.Fd())); err != nil {
		return nil, &NotGocryptfsError{Dir: dir, Err: err}
	}
	if err := checkKey(d, master); err != nil {
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
	if err := install(tx, e, force); err != nil {
		return nil, err
	}
	tx.commit()
	return e, nil
}

// Rewrap re-wraps the master key of the share in dir under keyID (or the
// current version of its key) and replaces the envelope; the data and the
// master key do not change. It returns the envelope and the key id it
// was wrapped under before.
func Rewrap(ctx context.Context, kms kmsclient.KMS, dir, keyID string) (e *envelope.Envelope, oldKeyID string, err error) {
	d, err := safepath.OpenDir(dir)
	if err != nil {
		return nil, "", fmt.Errorf("cipher directory: %w", err)
	}
	defer d.Close()
	if e, err = envelope.ReadAt(d); err != nil {
		return nil, "", err
	}
	oldKeyID = e.KMS.KeyID
	if err := e.Rewrap(ctx, kms, keyID); err != nil {
		return nil, "", err
	}
	if err := e.WriteAt(d, true); err != nil {
		return nil, "", err
	}
	return e, oldKeyID, nil
}

// install restricts the cipher root, writes its diriv (unless there is
// one) and, last, the envelope: until that is in place the directory is
// no share, and tx removes what came before if it fails.
func install(tx *undo, e *envelope.Envelope, force bool) error {
	d := tx.d
	dfd := int(d.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return fmt.Errorf("%s: %w", d.Name(), err)
	}
	if st.Mode&0o7777 != RootMode {
		if err := unix.Fchmod(dfd, RootMode); err != nil {
			return fmt.Errorf("restrict %s to mode %o: %w", d.Name(), RootMode, err)
		}
		tx.oldMode = st.Mode & 0o7777
	}
	if _, err := nametransform.ReadDirIVAt(dfd); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", d.Name(), err)
		}
		if err := nametransform.WriteDirIVAt(dfd); err != nil {
			return fmt.Errorf("%s: write %s: %w", d.Name(), nametransform.DirIVFilename, err)
		}
		tx.files = append(tx.files, nametransform.DirIVFilename)
	}
	if err := unix.Fstatat(dfd, envelope.FileName, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if !force {
			return &HasShareError{Dir: d.Name()}
		}
		backup := envelope.FileName + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
		if err := unix.Linkat(dfd, envelope.FileName, dfd, backup, 0); err != nil {
			return fmt.Errorf("back up the old envelope: %w", err)
		}
		tx.files = append(tx.files, backup)
	}
	return e.WriteAt(d, force)
}

// undo removes what Format or Import made when a later step fails.
type undo struct {
	d       *os.File
	dirs    []string // directories created, parents first
	files   []string // names created in d, in order
	oldMode uint32   // the root's mode before, when changed
	done    bool
}

func (u *undo) commit() { u.done = true }

func (u *undo) rollback() {
	if u.done {
		return
	}
	dfd := int(u.d.Fd())
	for i := len(u.files) - 1; i >= 0; i-- {
		unix.Unlinkat(dfd, u.files[i], 0)
	}
	if u.oldMode != 0 {
		unix.Fchmod(dfd, u.oldMode)
	}
	u.d.Sync()
	// Only directories this call made, and rmdir only removes empty
	// ones.
	for i := len(u.dirs) - 1; i >= 0; i-- {
		unix.Rmdir(u.dirs[i])
	}
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
		return &NotEmptyError{Dir: dir, First: names[0]}
	}
	return nil
}

// checkGocryptfsConf refuses a tree whose gocryptfs.conf lists other
// feature flags than the v2 defaults we read, when the file is there.
func checkGocryptfsConf(d *os.File) error {
	dir := d.Name()
	fd, err := unix.Openat(int(d.Fd()), "gocryptfs.conf", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s/gocryptfs.conf: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), "gocryptfs.conf")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s/gocryptfs.conf: %w", dir, err)
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

// checkKey tells whether master is the key of the tree open as d; see
// cryptfs.CheckKey.
func checkKey(d *os.File, master *secret.Key) error {
	core, err := cryptocore.New(master)
	if err != nil {
		return err
	}
	defer core.Wipe()
	return cryptfs.CheckKeyDir(d, core)
}
