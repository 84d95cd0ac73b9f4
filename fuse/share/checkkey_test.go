package share

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/nametransform"
)

// treeWriter writes a gocryptfs tree without mounting it.
type treeWriter struct {
	t    *testing.T
	core *cryptocore.CryptoCore
}

func newTreeWriter(t *testing.T, master *secret.Key) *treeWriter {
	core, err := cryptocore.New(master)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(core.Wipe)
	return &treeWriter{t: t, core: core}
}

// dir makes a directory with a diriv (the root when name is "").
func (w *treeWriter) dir(parent, name string) string {
	w.t.Helper()
	p := parent
	if name != "" {
		p = filepath.Join(parent, w.name(parent, name))
		if err := os.Mkdir(p, 0o755); err != nil {
			w.t.Fatal(err)
		}
	}
	if name == "" {
		// A fixed root diriv gives each root name the same cipher name
		// in every test tree, so one lucky key serves them all.
		if err := os.WriteFile(filepath.Join(p, nametransform.DirIVFilename), []byte("0123456789abcdef"), 0o444); err != nil {
			w.t.Fatal(err)
		}
		return p
	}
	d, err := os.Open(p)
	if err != nil {
		w.t.Fatal(err)
	}
	defer d.Close()
	if err := nametransform.WriteDirIVAt(int(d.Fd())); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *treeWriter) name(dir, plain string) string {
	w.t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		w.t.Fatal(err)
	}
	defer d.Close()
	iv, err := nametransform.ReadDirIVAt(int(d.Fd()))
	if err != nil {
		w.t.Fatal(err)
	}
	c, err := nametransform.New(w.core.NameBlock()).EncryptName(plain, iv)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// file writes an encrypted regular file; empty content writes an empty
// file, which holds nothing to check.
func (w *treeWriter) file(dir, plain string, content []byte) {
	w.t.Helper()
	var b []byte
	if len(content) > 0 {
		h, err := contentenc.RandomHeader()
		if err != nil {
			w.t.Fatal(err)
		}
		b = append(h.Pack(), contentenc.New(w.core.ContentAEAD()).EncryptBlock(nil, content, 0, h.ID[:])...)
	}
	if err := os.WriteFile(filepath.Join(dir, w.name(dir, plain)), b, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// luckyKey returns a key other than master under which the one name in
// the root of dir still decrypts: the padding check of a name passes for
// about one wrong key in 290. cache holds the keys found, by cipher name.
func luckyKey(t *testing.T, cache map[string]*secret.Key, dir string) *secret.Key {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	iv, _ := nametransform.ReadDirIVAt(int(d.Fd()))
	names, _ := d.Readdirnames(-1)
	var cName string
	for _, n := range names {
		if nametransform.NameType(n) == nametransform.NameRegular {
			cName = n
		}
	}
	if k, ok := cache[cName]; ok {
		return k
	}
	for range 100000 {
		k, _ := secret.Random(32)
		core, err := cryptocore.New(k)
		if err != nil {
			t.Fatal(err)
		}
		_, err = nametransform.New(core.NameBlock()).DecryptName(cName, iv)
		core.Wipe()
		if err == nil {
			cache[cName] = k
			return k
		}
		k.Wipe()
	}
	t.Fatal("no key found that decrypts the name")
	return nil
}

// TestImportNeedsEvidence: a key is adopted only when the tree shows it
// right; a tree too empty to tell takes --force, a wrong key is refused
// even with it.
func TestImportNeedsEvidence(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	master, _ := secret.Random(32)
	defer master.Wipe()
	other, _ := secret.Random(32)
	defer other.Wipe()
	cache := map[string]*secret.Key{}
	lucky := func(t *testing.T, root string) *secret.Key { return luckyKey(t, cache, root) }

	tests := []struct {
		name string
		tree func(w *treeWriter, root string)
		// key picks the key to import; nil means master.
		key     func(t *testing.T, root string) *secret.Key
		want    error // without force; nil means accepted
		wantFrc error // with force
	}{
		{
			name:    "only a diriv",
			tree:    func(w *treeWriter, root string) {},
			key:     func(*testing.T, string) *secret.Key { return other },
			want:    cryptfs.ErrKeyUnverified,
			wantFrc: nil,
		},
		{
			name:    "empty files only",
			tree:    func(w *treeWriter, root string) { w.file(root, "empty", nil) },
			key:     func(t *testing.T, root string) *secret.Key { return lucky(t, root) },
			want:    cryptfs.ErrKeyUnverified,
			wantFrc: nil,
		},
		{
			name: "one name that a wrong key decrypts by chance",
			tree: func(w *treeWriter, root string) { w.dir(root, "photos") },
			key:  func(t *testing.T, root string) *secret.Key { return lucky(t, root) },
			want: cryptfs.ErrKeyUnverified, wantFrc: nil,
		},
		{
			name: "content below the root, right key",
			tree: func(w *treeWriter, root string) {
				w.file(w.dir(w.dir(root, "photos"), "2026"), "a.jpg", []byte("jpeg"))
			},
			want: nil, wantFrc: nil,
		},
		{
			name: "content below the root, wrong key whose name decrypts",
			tree: func(w *treeWriter, root string) {
				w.file(w.dir(root, "photos"), "a.jpg", []byte("jpeg"))
			},
			key:     func(t *testing.T, root string) *secret.Key { return lucky(t, root) },
			want:    cryptfs.ErrWrongKey,
			wantFrc: cryptfs.ErrWrongKey,
		},
		{
			name: "three names, right key",
			tree: func(w *treeWriter, root string) {
				for _, n := range []string{"a", "b", "c"} {
					w.dir(root, n)
				}
			},
			want: nil, wantFrc: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				root := t.TempDir()
				w := newTreeWriter(t, master)
				w.dir(root, "")
				tt.tree(w, root)
				key := master
				if tt.key != nil {
					key = tt.key(t, root)
				}
				want := tt.want
				if force {
					want = tt.wantFrc
				}
				e, err := Import(ctx, kms, root, keyID, key, force)
				if want == nil {
					if err != nil {
						t.Fatalf("force=%v: %v", force, err)
					}
					if e == nil {
						t.Fatalf("force=%v: no envelope", force)
					}
					continue
				}
				if !errors.Is(err, want) {
					t.Fatalf("force=%v: got %v, want %v", force, err, want)
				}
				if _, err := os.Lstat(filepath.Join(root, envelope.FileName)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("force=%v: envelope written for a refused key", force)
				}
			}
		})
	}
}
