// Package local is the embedded KMS: customer master keys kept in a state
// directory on this host, used for AES-256-GCM key wrapping. It is the
// default provider, and `kmsagent kms serve` exposes it to other hosts.
package local

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/agent/uuid"
	"kmsagent/kmsclient"
)

const (
	providerName = "local"
	cmkSize      = 32
	// Deletion windows as Huawei Cloud KMS allows them.
	MinDeletionDays = 7
	MaxDeletionDays = 1096
)

// Store is a local KMS rooted at a state directory. Several processes may
// use the same directory: writers serialise on a file lock and readers
// reload when the state file has been replaced.
type Store struct {
	dir  string
	path string
	now  func() time.Time

	mu   sync.Mutex
	snap *snapshot
}

type snapshot struct {
	id      fileID
	keys    []*cmk
	byID    map[string]*cmk
	byAlias map[string]*cmk
}

type cmk struct {
	info     kmsclient.KeyInfo
	uuid     uuid.UUID
	current  uint32
	versions map[uint32]cipher.AEAD
}

// Open opens (creating if needed) the key store in dir.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("local kms: no state directory configured ([kms.local] state_dir)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local kms: create state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("local kms: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("local kms: state directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("local kms: state directory %s is accessible by group or others (mode %#o); run chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return &Store{dir: dir, path: filepath.Join(dir, stateFile), now: time.Now}, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) Provider() string { return providerName }

func (s *Store) fail(op, keyID string, kind error, format string, args ...any) error {
	return &kmsclient.Error{Provider: providerName, Op: op, KeyID: keyID, Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// load returns the current snapshot, re-reading the state file only when it
// was replaced since the last call.
func (s *Store) load() (*snapshot, error) {
	id, exists, err := statState(s.path)
	if err != nil {
		return nil, fmt.Errorf("local kms: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil && s.snap.id == id {
		return s.snap, nil
	}
	doc := &stateDoc{Format: stateFormat}
	if exists {
		if doc, err = readState(s.path); err != nil {
			return nil, fmt.Errorf("local kms: %w", err)
		}
	}
	snap, err := buildSnapshot(doc)
	wipeDoc(doc)
	if err != nil {
		return nil, fmt.Errorf("local kms: key store %s: %w", s.path, err)
	}
	snap.id = id
	s.snap = snap
	return snap, nil
}

func buildSnapshot(doc *stateDoc) (*snapshot, error) {
	snap := &snapshot{byID: map[string]*cmk{}, byAlias: map[string]*cmk{}}
	for _, d := range doc.Keys {
		u, err := uuid.Parse(d.ID)
		if err != nil {
			return nil, fmt.Errorf("key id: %w", err)
		}
		c := &cmk{uuid: u, versions: map[uint32]cipher.AEAD{}, info: kmsclient.KeyInfo{
			ID: d.ID, Alias: d.Alias, Description: d.Description, State: d.State,
			CreatedAt: d.CreatedAt, DeletionDate: d.DeletionDate, Versions: len(d.Versions), Provider: providerName,
		}}
		for _, v := range d.Versions {
			if len(v.Material) != cmkSize {
				return nil, fmt.Errorf("key %s version %d: %d bytes of material, want %d", d.ID, v.Version, len(v.Material), cmkSize)
			}
			block, err := aes.NewCipher(v.Material)
			if err != nil {
				return nil, err
			}
			aead, err := cipher.NewGCM(block)
			if err != nil {
				return nil, err
			}
			c.versions[v.Version] = aead
			c.current = max(c.current, v.Version)
		}
		if c.current == 0 {
			return nil, fmt.Errorf("key %s has no versions", d.ID)
		}
		if _, dup := snap.byID[d.ID]; dup {
			return nil, fmt.Errorf("key %s listed twice", d.ID)
		}
		snap.byID[d.ID] = c
		if d.Alias != "" {
			snap.byAlias[d.Alias] = c
		}
		snap.keys = append(snap.keys, c)
	}
	return snap, nil
}

func wipeDoc(doc *stateDoc) {
	for i := range doc.Keys {
		for j := range doc.Keys[i].Versions {
			secret.Zero(doc.Keys[i].Versions[j].Material)
		}
	}
}

// lookup resolves a key id, an alias or "alias/NAME". A key whose deletion
// date has passed no longer exists.
func (s *Store) lookup(snap *snapshot, op, ref string) (*cmk, error) {
	c := snap.byID[ref]
	if c == nil {
		c = snap.byAlias[strings.TrimPrefix(ref, "alias/")]
	}
	if c == nil || c.deleted(s.now()) {
		if ref == "" {
			return nil, s.fail(op, ref, kmsclient.ErrInvalidRequest, "no key id given")
		}
		return nil, s.fail(op, ref, kmsclient.ErrKeyNotFound, "no such key in %s", s.dir)
	}
	return c, nil
}

func (c *cmk) deleted(now time.Time) bool {
	return c.info.State == kmsclient.KeyPendingDeletion && !c.info.DeletionDate.IsZero() && !now.Before(c.info.DeletionDate)
}

// usable looks up a key that must be enabled for a cryptographic operation.
func (s *Store) usable(ctx context.Context, op, ref string) (*cmk, error) {
	if err := ctx.Err(); err != nil {
		return nil, s.fail(op, ref, kmsclient.ErrUnavailable, "%v", err)
	}
	snap, err := s.load()
	if err != nil {
		return nil, s.fail(op, ref, kmsclient.ErrUnavailable, "%v", err)
	}
	c, err := s.lookup(snap, op, ref)
	if err != nil {
		return nil, err
	}
	switch c.info.State {
	case kmsclient.KeyEnabled:
		return c, nil
	case kmsclient.KeyDisabled:
		return nil, s.fail(op, c.info.ID, kmsclient.ErrKeyDisabled, "key is disabled")
	case kmsclient.KeyPendingDeletion:
		return nil, s.fail(op, c.info.ID, kmsclient.ErrKeyPendingDeletion, "key is scheduled for deletion on %s", c.info.DeletionDate.Format(time.DateOnly))
	default:
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidRequest, "key is in state %s", c.info.State)
	}
}

func (s *Store) GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error) {
	const op = "generate-data-key"
	if size < 1 || size > maxDataKeySize {
		return nil, s.fail(op, keyID, kmsclient.ErrInvalidRequest, "data key size %d bytes, want 1 to %d", size, maxDataKeySize)
	}
	c, err := s.usable(ctx, op, keyID)
	if err != nil {
		return nil, err
	}
	pt, err := secret.Random(size)
	if err != nil {
		return nil, s.fail(op, keyID, kmsclient.ErrUnavailable, "%v", err)
	}
	wrapped, err := s.seal(op, c, pt, binding)
	if err != nil {
		pt.Wipe()
		return nil, err
	}
	return &kmsclient.DataKey{Plaintext: pt, Wrapped: wrapped, KeyID: c.info.ID}, nil
}

func (s *Store) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	const op = "encrypt"
	if n := plaintext.Len(); n < 1 || n > maxDataKeySize {
		return nil, s.fail(op, keyID, kmsclient.ErrInvalidRequest, "key size %d bytes, want 1 to %d", n, maxDataKeySize)
	}
	c, err := s.usable(ctx, op, keyID)
	if err != nil {
		return nil, err
	}
	return s.seal(op, c, plaintext, binding)
}

func (s *Store) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	const op = "decrypt"
	c, err := s.usable(ctx, op, keyID)
	if err != nil {
		return nil, err
	}
	return s.open(op, c, wrapped, binding)
}

func (s *Store) ReEncrypt(ctx context.Context, srcKeyID string, wrapped []byte, dstKeyID string, binding string) ([]byte, error) {
	const op = "re-encrypt"
	src, err := s.usable(ctx, op, srcKeyID)
	if err != nil {
		return nil, err
	}
	dst, err := s.usable(ctx, op, dstKeyID)
	if err != nil {
		return nil, err
	}
	pt, err := s.open(op, src, wrapped, binding)
	if err != nil {
		return nil, err
	}
	defer pt.Wipe()
	return s.seal(op, dst, pt, binding)
}

func (s *Store) DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error) {
	const op = "describe-key"
	if err := ctx.Err(); err != nil {
		return nil, s.fail(op, keyID, kmsclient.ErrUnavailable, "%v", err)
	}
	snap, err := s.load()
	if err != nil {
		return nil, s.fail(op, keyID, kmsclient.ErrUnavailable, "%v", err)
	}
	c, err := s.lookup(snap, op, keyID)
	if err != nil {
		return nil, err
	}
	info := c.info
	return &info, nil
}

func (s *Store) seal(op string, c *cmk, pt *secret.Key, binding string) ([]byte, error) {
	if binding == "" {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidRequest, "empty binding: every wrapped key must be bound to a volume")
	}
	aead := c.versions[c.current]
	out := make([]byte, 0, blobHeaderSize+nonceSize+pt.Len()+tagSize)
	out = appendBlobHeader(out, c.uuid, c.current)
	header := out[:blobHeaderSize]
	nonce := newNonce()
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], pt.Bytes(), blobAAD(header, binding)), nil
}

func (s *Store) open(op string, c *cmk, wrapped []byte, binding string) (*secret.Key, error) {
	if binding == "" {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidRequest, "empty binding: every wrapped key is bound to a volume")
	}
	b, err := parseBlob(wrapped)
	if err != nil {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidCiphertext, "%v", err)
	}
	if b.keyID != c.uuid {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidCiphertext, "wrapped under another key (%s)", uuid.UUID(b.keyID).String())
	}
	aead := c.versions[b.keyVersion]
	if aead == nil {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidCiphertext, "wrapped under key version %d, which this key does not have", b.keyVersion)
	}
	pt, err := secret.New(len(b.sealed) - tagSize)
	if err != nil {
		return nil, s.fail(op, c.info.ID, kmsclient.ErrUnavailable, "%v", err)
	}
	if _, err := aead.Open(pt.Bytes()[:0], b.nonce, b.sealed, blobAAD(b.header, binding)); err != nil {
		pt.Wipe()
		return nil, s.fail(op, c.info.ID, kmsclient.ErrInvalidCiphertext, "authentication failed: tampered, or bound to another volume")
	}
	return pt, nil
}

func newNonce() [nonceSize]byte {
	var n [nonceSize]byte
	randRead(n[:])
	return n
}

// Key management. Each operation runs under the writer lock on a fresh read
// of the state file, so concurrent admins never lose each other's changes.

// validAlias: [A-Za-z0-9][A-Za-z0-9:/_.-]{0,254}, as a loop: the
// regular expression compiles to 200 KiB of heap, made at start-up by
// every process that links this package (the daemon and each worker).
func validAlias(s string) bool {
	if s == "" || len(s) > 255 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune(":/_.-", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// CreateKey adds an enabled AES-256 CMK.
func (s *Store) CreateKey(ctx context.Context, alias, description string) (*kmsclient.KeyInfo, error) {
	const op = "create-key"
	alias = strings.TrimPrefix(alias, "alias/")
	if alias != "" {
		if !validAlias(alias) {
			return nil, s.fail(op, "", kmsclient.ErrInvalidRequest, "alias %q: use 1 to 255 letters, digits and :/_.- starting with a letter or digit", alias)
		}
		if _, err := uuid.Parse(alias); err == nil {
			return nil, s.fail(op, "", kmsclient.ErrInvalidRequest, "alias %q looks like a key id; choose a name", alias)
		}
	}
	if len(description) > 8192 || strings.ContainsAny(description, "\x00") {
		return nil, s.fail(op, "", kmsclient.ErrInvalidRequest, "description too long or contains NUL")
	}
	var info kmsclient.KeyInfo
	err := s.update(ctx, op, func(doc *stateDoc, now time.Time) error {
		if alias != "" {
			for _, k := range doc.Keys {
				if k.Alias == alias {
					return s.fail(op, k.ID, kmsclient.ErrInvalidRequest, "alias %q is already used by key %s", alias, k.ID)
				}
			}
		}
		material := make([]byte, cmkSize)
		randRead(material)
		d := cmkDoc{
			ID: uuid.New().String(), Alias: alias, Description: description,
			State: kmsclient.KeyEnabled, CreatedAt: now,
			Versions: []versionDoc{{Version: 1, CreatedAt: now, Material: material}},
		}
		doc.Keys = append(doc.Keys, d)
		info = docInfo(&d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// ListKeys returns every key that exists, oldest first.
func (s *Store) ListKeys(ctx context.Context) ([]kmsclient.KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	snap, err := s.load()
	if err != nil {
		return nil, s.fail("list-keys", "", kmsclient.ErrUnavailable, "%v", err)
	}
	var out []kmsclient.KeyInfo
	for _, c := range snap.keys {
		if !c.deleted(s.now()) {
			out = append(out, c.info)
		}
	}
	slices.SortStableFunc(out, func(a, b kmsclient.KeyInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (s *Store) EnableKey(ctx context.Context, keyID string) error {
	_, err := s.change(ctx, "enable-key", keyID, func(d *cmkDoc, now time.Time) error {
		if d.State == kmsclient.KeyPendingDeletion {
			return s.fail("enable-key", d.ID, kmsclient.ErrKeyPendingDeletion, "cancel the deletion first")
		}
		d.State = kmsclient.KeyEnabled
		return nil
	})
	return err
}

func (s *Store) DisableKey(ctx context.Context, keyID string) error {
	_, err := s.change(ctx, "disable-key", keyID, func(d *cmkDoc, now time.Time) error {
		if d.State == kmsclient.KeyPendingDeletion {
			return s.fail("disable-key", d.ID, kmsclient.ErrKeyPendingDeletion, "key is already scheduled for deletion")
		}
		d.State = kmsclient.KeyDisabled
		return nil
	})
	return err
}

// RotateKey adds a key version that wraps from now on; older versions keep
// unwrapping what they wrapped.
func (s *Store) RotateKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error) {
	return s.change(ctx, "rotate-key", keyID, func(d *cmkDoc, now time.Time) error {
		if d.State != kmsclient.KeyEnabled {
			return s.fail("rotate-key", d.ID, kmsclient.ErrKeyDisabled, "only an enabled key can be rotated (state %s)", d.State)
		}
		var last uint32
		for _, v := range d.Versions {
			last = max(last, v.Version)
		}
		material := make([]byte, cmkSize)
		randRead(material)
		d.Versions = append(d.Versions, versionDoc{Version: last + 1, CreatedAt: now, Material: material})
		return nil
	})
}

// ScheduleDeletion makes the key unusable now and deletes it, with all its
// versions, after days days. Until then CancelDeletion restores it.
func (s *Store) ScheduleDeletion(ctx context.Context, keyID string, days int) (*kmsclient.KeyInfo, error) {
	const op = "schedule-deletion"
	if days < MinDeletionDays || days > MaxDeletionDays {
		return nil, s.fail(op, keyID, kmsclient.ErrInvalidRequest, "pending window of %d days, want %d to %d", days, MinDeletionDays, MaxDeletionDays)
	}
	return s.change(ctx, op, keyID, func(d *cmkDoc, now time.Time) error {
		d.State = kmsclient.KeyPendingDeletion
		d.DeletionDate = now.Add(time.Duration(days) * 24 * time.Hour)
		return nil
	})
}

// CancelDeletion returns a key pending deletion to the disabled state, as
// AWS and Huawei Cloud do: the admin enables it deliberately.
func (s *Store) CancelDeletion(ctx context.Context, keyID string) error {
	_, err := s.change(ctx, "cancel-deletion", keyID, func(d *cmkDoc, now time.Time) error {
		if d.State != kmsclient.KeyPendingDeletion {
			return s.fail("cancel-deletion", d.ID, kmsclient.ErrInvalidRequest, "key is not scheduled for deletion (state %s)", d.State)
		}
		d.State = kmsclient.KeyDisabled
		d.DeletionDate = time.Time{}
		return nil
	})
	return err
}

// change applies fn to one key under the writer lock.
func (s *Store) change(ctx context.Context, op, keyID string, fn func(*cmkDoc, time.Time) error) (*kmsclient.KeyInfo, error) {
	var info kmsclient.KeyInfo
	err := s.update(ctx, op, func(doc *stateDoc, now time.Time) error {
		ref := strings.TrimPrefix(keyID, "alias/")
		for i := range doc.Keys {
			d := &doc.Keys[i]
			if d.ID == keyID || (d.Alias != "" && d.Alias == ref) {
				if err := fn(d, now); err != nil {
					return err
				}
				info = docInfo(d)
				return nil
			}
		}
		return s.fail(op, keyID, kmsclient.ErrKeyNotFound, "no such key in %s", s.dir)
	})
	if err != nil {
		return nil, err
	}
	return &info, nil
}

// update runs fn on a fresh copy of the state under the cross-process lock
// and writes the result atomically. Keys whose deletion date has passed are
// purged on the way.
func (s *Store) update(ctx context.Context, op string, fn func(*stateDoc, time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock, err := lockState(s.dir)
	if err != nil {
		return s.fail(op, "", kmsclient.ErrUnavailable, "%v", err)
	}
	defer unlock()
	doc := &stateDoc{Format: stateFormat}
	if _, exists, err := statState(s.path); err != nil {
		return s.fail(op, "", kmsclient.ErrUnavailable, "%v", err)
	} else if exists {
		if doc, err = readState(s.path); err != nil {
			return s.fail(op, "", kmsclient.ErrUnavailable, "%v", err)
		}
	}
	defer wipeDoc(doc)
	now := s.now().UTC().Truncate(time.Second)
	doc.Keys = slices.DeleteFunc(doc.Keys, func(d cmkDoc) bool {
		return d.State == kmsclient.KeyPendingDeletion && !d.DeletionDate.IsZero() && !now.Before(d.DeletionDate)
	})
	if err := fn(doc, now); err != nil {
		return err
	}
	if err := writeState(s.dir, doc); err != nil {
		return s.fail(op, "", kmsclient.ErrUnavailable, "%v", err)
	}
	return nil
}

func docInfo(d *cmkDoc) kmsclient.KeyInfo {
	return kmsclient.KeyInfo{
		ID: d.ID, Alias: d.Alias, Description: d.Description, State: d.State,
		CreatedAt: d.CreatedAt, DeletionDate: d.DeletionDate, Versions: len(d.Versions), Provider: providerName,
	}
}
