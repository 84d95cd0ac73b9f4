package local

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/kmsclient"
)

// On-disk state: one JSON document holding every CMK, replaced atomically.
// Key material is stored base64 in a 0600 file in a 0700 directory; whoever
// can read it holds the CMKs, as with any file-backed KMS.
const (
	stateFile     = "keys.json"
	lockFile      = ".lock"
	stateFormat   = 1
	maxStateBytes = 64 << 20
)

type stateDoc struct {
	Format int      `json:"format"`
	Keys   []cmkDoc `json:"keys"`
}

type cmkDoc struct {
	ID           string             `json:"id"`
	Alias        string             `json:"alias,omitempty"`
	Description  string             `json:"description,omitempty"`
	State        kmsclient.KeyState `json:"state"`
	CreatedAt    time.Time          `json:"created_at"`
	DeletionDate time.Time          `json:"deletion_date,omitzero"`
	Versions     []versionDoc       `json:"versions"`
}

type versionDoc struct {
	Version   uint32    `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	Material  []byte    `json:"material"`
}

// fileID identifies one version of the state file, so readers reload only
// after a writer replaced it.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

func statState(path string) (fileID, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if err == unix.ENOENT {
			return fileID{}, false, nil
		}
		return fileID{}, false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&0o077 != 0 {
		return fileID{}, false, fmt.Errorf("%s is accessible by group or others (mode %#o): it holds master keys; run chmod 600 %s", path, st.Mode&0o777, path)
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}, true, nil
}

func readState(path string) (*stateDoc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(&limitReader{f: f, n: maxStateBytes})
	dec.DisallowUnknownFields()
	var doc stateDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("key store %s is damaged (%v); restore it from backup", path, err)
	}
	if doc.Format != stateFormat {
		return nil, fmt.Errorf("key store %s has format %d, this build reads format %d", path, doc.Format, stateFormat)
	}
	return &doc, nil
}

type limitReader struct {
	f *os.File
	n int64
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxStateBytes)
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.f.Read(p)
	r.n -= int64(n)
	return n, err
}

// writeState replaces the state file atomically and durably: temp file,
// fsync, rename, fsync of the directory.
func writeState(dir string, doc *stateDoc) error {
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode key store: %w", err)
	}
	defer clear(data)
	tmp, err := os.CreateTemp(dir, ".keys-*.tmp")
	if err != nil {
		return fmt.Errorf("write key store: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write key store: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("write key store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write key store: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key store: %w", err)
	}
	if err := os.Rename(tmpName, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write key store: %w", err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write key store: fsync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write key store: fsync dir: %w", err)
	}
	return nil
}

// lockState takes the cross-process writer lock. Readers need no lock: the
// state file is only ever replaced by rename, so they see a whole version.
func lockState(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock key store: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock key store: %w", err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
