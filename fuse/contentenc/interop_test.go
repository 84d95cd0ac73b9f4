package contentenc_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/nametransform"
)

// Names long enough that their cipher names are hashed (LongNames).
var (
	longFile = strings.Repeat("long-name-", 22) + "end" // 223 bytes
	longDir  = strings.Repeat("d", 200)
)

// sparseData is 3 blocks of zeros and a byte in the fourth block: written
// through gocryptfs it leaves the three blocks as holes on disk.
var sparseData = append(make([]byte, 3*contentenc.DefaultBS+10), 'z')

// interopTree is the plaintext content both directions are checked with:
// the block-boundary sizes, a multi-block file, long file and directory
// names, nesting (per-directory IVs), a symlink, a sparse file and xattrs
// including an empty and a large value.
func interopTree() tree {
	return tree{
		"empty": {kind: 'f', data: []byte{}},
		"one": {kind: 'f', data: []byte("1"), xattrs: map[string]string{
			"user.test":  "value",
			"user.empty": "",
			"user.big":   strings.Repeat("x", 3000), // ext4 keeps all xattrs of an inode in one 4 KiB block
		}},
		"bs-1":                      {kind: 'f', data: random(4095)},
		"bs":                        {kind: 'f', data: random(4096)},
		"bs+1":                      {kind: 'f', data: random(4097)},
		"big":                       {kind: 'f', data: random(3 << 20)},
		"sparse":                    {kind: 'f', data: sparseData},
		longFile:                    {kind: 'f', data: random(5000)},
		"sub":                       {kind: 'd', xattrs: map[string]string{"user.dir": "on a directory"}},
		"sub/inner":                 {kind: 'f', data: []byte("inner file\n")},
		"sub/" + longDir:            {kind: 'd'},
		"sub/" + longDir + "/deep":  {kind: 'f', data: []byte("deep")},
		"link":                      {kind: 'l', target: "sub/inner"},
		"dangling " + longDir[:150]: {kind: 'l', target: "/nowhere/" + strings.Repeat("t", 300)},
	}
}

// TestInteropGocryptfsWritesWeRead lets gocryptfs create the tree, then
// reads the cipher directory with this module's packages only.
func TestInteropGocryptfsWritesWeRead(t *testing.T) {
	bin := requireGocryptfs(t)
	c := newCrypt(t)
	base := t.TempDir()
	cipherDir, mnt := filepath.Join(base, "cipher"), filepath.Join(base, "mnt")
	mkdirs(t, cipherDir, mnt)
	// gocryptfs -masterkey needs only the root gocryptfs.diriv, so no
	// -init and no password: ours doubles as a check of WriteDirIVAt.
	withDir(t, cipherDir, func(fd int) error { return nametransform.WriteDirIVAt(fd) })

	want := interopTree()
	mountGocryptfs(t, bin, c, cipherDir, mnt)
	writePlainTree(t, mnt, want)
	unmount(t, mnt)

	got := decryptTree(t, c, cipherDir)
	compareTrees(t, want, got)

	// gocryptfs must have left the sparse file's first blocks as holes,
	// or this test does not cover hole decryption.
	assertHoles(t, c, cipherDir, "sparse", 3)
	assertPerms(t, cipherDir)
}

// assertPerms checks that the modes we give gocryptfs.diriv and .name
// files are the ones gocryptfs gave them.
func assertPerms(t *testing.T, cipherDir string) {
	t.Helper()
	seen := map[int]bool{}
	err := filepath.WalkDir(cipherDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == filepath.Join(cipherDir, nametransform.DirIVFilename) {
			return err // the root diriv is ours
		}
		var want os.FileMode
		typ := nametransform.NameType(d.Name())
		switch typ {
		case nametransform.NameDirIV:
			want = nametransform.DirIVPerm
		case nametransform.NameLongFile:
			want = nametransform.NamePerm
		default:
			return nil
		}
		seen[typ] = true
		info, err := d.Info()
		if err == nil && info.Mode().Perm() != want {
			t.Errorf("%s: gocryptfs wrote mode %o, we write %o", d.Name(), info.Mode().Perm(), want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !seen[nametransform.NameDirIV] || !seen[nametransform.NameLongFile] {
		t.Errorf("no diriv or .name file written by gocryptfs found")
	}
}

// TestInteropWeWriteGocryptfsReads builds the cipher directory with this
// module's packages only, has gocryptfs -fsck check it, then mounts it
// with gocryptfs and reads the plaintext back.
func TestInteropWeWriteGocryptfsReads(t *testing.T) {
	bin := requireGocryptfs(t)
	c := newCrypt(t)
	base := t.TempDir()
	cipherDir, mnt := filepath.Join(base, "cipher"), filepath.Join(base, "mnt")
	mkdirs(t, cipherDir, mnt)

	want := interopTree()
	encryptTree(t, c, cipherDir, want)
	fsck(t, bin, c, cipherDir)

	mountGocryptfs(t, bin, c, cipherDir, mnt)
	got := readPlainTree(t, mnt)
	// Append through gocryptfs to a file we wrote, so that it has to
	// decrypt our last block and re-encrypt it.
	appendFile(t, filepath.Join(mnt, "bs+1"), []byte("more"))
	unmount(t, mnt)
	compareTrees(t, want, got)

	after := decryptTree(t, c, cipherDir)
	if w := append(bytes.Clone(want["bs+1"].data), "more"...); !bytes.Equal(after["bs+1"].data, w) {
		t.Errorf("bs+1 after gocryptfs appended: %d bytes, want %d", len(after["bs+1"].data), len(w))
	}
}

// writePlainTree creates the tree through a mounted file system.
func writePlainTree(t *testing.T, root string, tr tree) {
	t.Helper()
	for _, p := range sortedPaths(tr) {
		n, path := tr[p], filepath.Join(root, p)
		var err error
		switch n.kind {
		case 'd':
			err = os.Mkdir(path, 0o755)
		case 'l':
			err = os.Symlink(n.target, path)
		case 'f':
			if bytes.Equal(n.data, sparseData) {
				err = writeSparse(path, n.data)
			} else {
				err = os.WriteFile(path, n.data, 0o644)
			}
		}
		if err != nil {
			t.Fatalf("create %s: %v", short(p), err)
		}
		for name, v := range n.xattrs {
			if err := unix.Lsetxattr(path, name, []byte(v), 0); err != nil {
				t.Fatalf("setxattr %s %s: %v", short(p), name, err)
			}
		}
	}
}

// writeSparse writes only the non-zero tail at its offset, so the file
// system sees a write past EOF and leaves a gap.
func writeSparse(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	i := bytes.LastIndexFunc(data, func(r rune) bool { return r == 0 }) + 1
	if _, err := f.WriteAt(data[i:], int64(i)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readPlainTree reads a mounted file system into a tree.
func readPlainTree(t *testing.T, root string) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var n node
		switch {
		case d.Type()&os.ModeSymlink != 0:
			n.kind = 'l'
			n.target, err = os.Readlink(path)
		case d.IsDir():
			n.kind = 'd'
		default:
			n.kind = 'f'
			n.data, err = os.ReadFile(path)
		}
		if err != nil {
			return err
		}
		if n.kind != 'l' {
			if n.xattrs, err = plainXattrs(path); err != nil {
				return err
			}
		}
		tr[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("read plaintext tree: %v", err)
	}
	return tr
}

func plainXattrs(path string) (map[string]string, error) {
	names, err := listXattrs(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, name := range names {
		v, err := getXattr(path, name)
		if err != nil {
			return nil, err
		}
		m[name] = string(v)
	}
	return nilIfEmpty(m), nil
}

// encryptTree writes the cipher form of a plaintext tree with our
// packages: a gocryptfs.diriv per directory, encrypted and, where needed,
// hashed names with .name files, headers and sealed blocks, encrypted
// symlink targets, xattr names and values. Full zero blocks before the
// last are left as holes, as a sparse write would.
func encryptTree(t *testing.T, c *crypt, cipherDir string, tr tree) {
	t.Helper()
	withDir(t, cipherDir, func(fd int) error { return nametransform.WriteDirIVAt(fd) })
	cipherPath := map[string]string{"": cipherDir}
	for _, p := range sortedPaths(tr) {
		n := tr[p]
		parent, name := filepath.Split(p)
		parent = strings.TrimSuffix(parent, "/")
		dir := cipherPath[parent]
		var path string
		withDir(t, dir, func(fd int) error {
			iv, err := nametransform.ReadDirIVAt(fd)
			if err != nil {
				return err
			}
			cName, err := c.names.EncryptAndHashName(name, iv)
			if err != nil {
				return err
			}
			if nametransform.NameType(cName) == nametransform.NameLongContent {
				full, err := c.names.EncryptName(name, iv)
				if err != nil {
					return err
				}
				if err := nametransform.WriteLongNameAt(fd, cName, full); err != nil {
					return err
				}
			}
			path = filepath.Join(dir, cName)
			return nil
		})
		cipherPath[p] = path
		var err error
		switch n.kind {
		case 'd':
			if err = os.Mkdir(path, 0o755); err == nil {
				withDir(t, path, func(fd int) error { return nametransform.WriteDirIVAt(fd) })
			}
		case 'l':
			err = os.Symlink(c.cont.EncryptSymlinkTarget(n.target), path)
		case 'f':
			err = os.WriteFile(path, encryptFile(t, c, n.data), 0o644)
		}
		if err != nil {
			t.Fatalf("%s: %v", short(p), err)
		}
		for name, v := range n.xattrs {
			cName, err := c.names.EncryptXattrName(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(path, cName, c.cont.EncryptXattrValue([]byte(v)), 0); err != nil {
				t.Fatalf("setxattr %s %s: %v", short(p), name, err)
			}
		}
	}
}

func encryptFile(t *testing.T, c *crypt, plain []byte) []byte {
	t.Helper()
	if len(plain) == 0 {
		return nil
	}
	h, err := contentenc.RandomHeader()
	if err != nil {
		t.Fatal(err)
	}
	out := h.Pack()
	zero := make([]byte, contentenc.DefaultBS)
	for _, b := range contentenc.ExplodeRange(0, uint64(len(plain))) {
		blk := plain[b.PlainOff() : b.PlainOff()+b.Length]
		if bytes.Equal(blk, zero) && b.PlainOff()+b.Length < uint64(len(plain)) {
			out = append(out, make([]byte, contentenc.CipherBS)...) // hole
			continue
		}
		out = c.cont.EncryptBlocks(out, blk, b.BlockNo, h.ID[:])
	}
	if uint64(len(out)) != contentenc.CipherSize(uint64(len(plain))) {
		t.Fatalf("cipher file %d bytes, CipherSize says %d", len(out), contentenc.CipherSize(uint64(len(plain))))
	}
	return out
}

// decryptTree reads a cipher directory with our packages only.
func decryptTree(t *testing.T, c *crypt, cipherDir string) tree {
	t.Helper()
	tr := tree{}
	var walk func(dir, prefix string)
	walk = func(dir, prefix string) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var iv []byte
		withDir(t, dir, func(fd int) (err error) { iv, err = nametransform.ReadDirIVAt(fd); return err })
		for _, e := range entries {
			cName := e.Name()
			full := cName
			switch nametransform.NameType(cName) {
			case nametransform.NameDirIV, nametransform.NameLongFile:
				continue
			case nametransform.NameOther:
				t.Errorf("%s: unexpected entry %q", dir, cName)
				continue
			case nametransform.NameLongContent:
				withDir(t, dir, func(fd int) (err error) { full, err = nametransform.ReadLongNameAt(fd, cName); return err })
			}
			name, err := c.names.DecryptName(full, iv)
			if err != nil {
				t.Errorf("%s/%s: %v", dir, cName, err)
				continue
			}
			p, path := prefix+name, filepath.Join(dir, cName)
			n, err := decryptNode(c, path, e)
			if err != nil {
				t.Errorf("%s: %v", short(p), err)
				continue
			}
			tr[p] = n
			if n.kind == 'd' {
				walk(path, p+"/")
			}
		}
	}
	walk(cipherDir, "")
	return tr
}

func decryptNode(c *crypt, path string, e os.DirEntry) (node, error) {
	var n node
	var err error
	switch {
	case e.Type()&os.ModeSymlink != 0:
		n.kind = 'l'
		var s string
		if s, err = os.Readlink(path); err == nil {
			n.target, err = c.cont.DecryptSymlinkTarget(s)
		}
		return n, err
	case e.IsDir():
		n.kind = 'd'
	default:
		n.kind = 'f'
		if n.data, err = decryptFile(c, path); err != nil {
			return n, err
		}
	}
	n.xattrs, err = decryptXattrs(c, path)
	return n, err
}

func decryptFile(c *crypt, path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	size, err := contentenc.PlainSize(uint64(len(raw)))
	if err != nil || len(raw) == 0 {
		return []byte{}, err
	}
	h, err := contentenc.ParseHeader(raw[:contentenc.HeaderLen])
	if err != nil {
		return nil, err
	}
	plain, err := c.cont.DecryptBlocks(raw[contentenc.HeaderLen:], 0, h.ID[:])
	if err != nil {
		return nil, err
	}
	if uint64(len(plain)) != size {
		return nil, fmt.Errorf("decrypted %d bytes, PlainSize says %d", len(plain), size)
	}
	return plain, nil
}

func decryptXattrs(c *crypt, path string) (map[string]string, error) {
	names, err := listXattrs(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, stored := range names {
		if !strings.HasPrefix(stored, nametransform.XattrStorePrefix) {
			continue // e.g. security.selinux of the backing file system
		}
		name, err := c.names.DecryptXattrName(stored)
		if err != nil {
			return nil, err
		}
		v, err := getXattr(path, stored)
		if err != nil {
			return nil, err
		}
		plain, err := c.cont.DecryptXattrValue(v)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		m[name] = string(plain)
	}
	return nilIfEmpty(m), nil
}

// assertHoles checks that the first n blocks of the cipher file for the
// plaintext name are all zero on disk.
func assertHoles(t *testing.T, c *crypt, cipherDir, name string, n int) {
	t.Helper()
	var cName string
	withDir(t, cipherDir, func(fd int) error {
		iv, err := nametransform.ReadDirIVAt(fd)
		if err == nil {
			cName, err = c.names.EncryptAndHashName(name, iv)
		}
		return err
	})
	f, err := os.Open(filepath.Join(cipherDir, cName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n*contentenc.CipherBS)
	if _, err := f.ReadAt(buf, int64(contentenc.CipherOff(0))); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("%s: first %d cipher blocks are not holes; hole decryption untested", name, n)
	}
}

func listXattrs(path string) ([]string, error) {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(path, buf); err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:sz]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

func getXattr(path, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(path, name, nil)
	if err != nil || sz == 0 {
		return []byte{}, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(path, name, buf)
	return buf[:sz], err
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// withDir runs fn with an fd for dir, as the *At functions want.
func withDir(t *testing.T, dir string, fn func(fd int) error) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := fn(fd); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
}
