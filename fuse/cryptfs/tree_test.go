package cryptfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A reference tree written through one implementation and compared
// through another (interop tests) or against itself after a remount.

type treeEntry struct {
	kind   os.FileMode // 0 (regular), ModeDir or ModeSymlink
	perm   os.FileMode
	data   []byte
	target string
	xattrs map[string]string
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var (
	longName200 = strings.Repeat("L", 200)
	longName255 = strings.Repeat("x", 250) + ".long"
	longDir     = strings.Repeat("D", 180)
	longTarget  = "/" + strings.Repeat("target/", 280)
)

// writeTree creates the reference tree below root with plain system calls
// and returns what it should look like.
func writeTree(t testing.TB, root string) map[string]treeEntry {
	t.Helper()
	want := map[string]treeEntry{}
	file := func(rel string, data []byte, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatalf("write %s: %v", rel, err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		want[rel] = treeEntry{perm: perm, data: data}
	}
	dir := func(rel string, perm os.FileMode) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(root, rel), perm); err != nil {
			t.Fatalf("mkdir %s: %v", rel, err)
		}
		if err := os.Chmod(filepath.Join(root, rel), perm); err != nil {
			t.Fatal(err)
		}
		want[rel] = treeEntry{kind: os.ModeDir, perm: perm}
	}
	link := func(rel, target string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			t.Fatalf("symlink %s: %v", rel, err)
		}
		want[rel] = treeEntry{kind: os.ModeSymlink, target: target}
	}
	for i, n := range []int{0, 1, 4095, 4096, 4097, 3<<20 + 123} {
		file("size-"+strconv.Itoa(n), randBytes(uint64(i+1), n), 0o644)
	}
	file("private", []byte("secret text\n"), 0o600)
	dir("dir", 0o755)
	dir("dir/sub", 0o750)
	file("dir/sub/deep.txt", []byte("deep\n"), 0o640)
	file(longName200, randBytes(7, 5000), 0o644)
	file(longName255, []byte("255"), 0o644)
	dir(longDir, 0o755)
	file(longDir+"/"+longName200, []byte("inside long dir"), 0o644)
	dir("empty-dir", 0o700)

	// Sparse: data at both ends, holes between.
	sparse := make([]byte, 5<<20+17+3)
	copy(sparse, "start")
	copy(sparse[5<<20+17:], "end")
	f, err := os.OpenFile(filepath.Join(root, "sparse"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("start"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), 5<<20+17); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want["sparse"] = treeEntry{perm: 0o644, data: sparse}

	// Grown by truncate from a partial block.
	grown := make([]byte, 1<<20+5)
	copy(grown, randBytes(9, 100))
	file("grown", grown[:100], 0o644)
	if err := os.Truncate(filepath.Join(root, "grown"), int64(len(grown))); err != nil {
		t.Fatal(err)
	}
	want["grown"] = treeEntry{perm: 0o644, data: grown}

	link("link-rel", "dir/sub/deep.txt")
	link("link-abs", "/etc/hostname")
	link("link-long", longTarget)
	link(longName200+"-link", "size-1")

	// Hard link: both names show the same content.
	if err := os.Link(filepath.Join(root, "private"), filepath.Join(root, "private-link")); err != nil {
		t.Fatal(err)
	}
	want["private-link"] = want["private"]

	setx := func(rel, name, value string) {
		t.Helper()
		if err := unix.Lsetxattr(filepath.Join(root, rel), name, []byte(value), 0); err != nil {
			t.Fatalf("setxattr %s %s: %v", rel, name, err)
		}
		e := want[rel]
		if e.xattrs == nil {
			e.xattrs = map[string]string{}
		}
		e.xattrs[name] = value
		want[rel] = e
	}
	setx("size-1", "user.test", "value")
	setx("size-1", "user.big", strings.Repeat("v", 3000))
	setx("dir", "user.dir", "on a directory")
	setx("size-0", "user.empty", "")
	return want
}

// checkTree compares the tree below root with want, both ways.
func checkTree(t testing.TB, root string, want map[string]treeEntry) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		seen[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected entry %q", rel)
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.Mode().Type() != w.kind {
			t.Errorf("%s: type %v, want %v", rel, st.Mode().Type(), w.kind)
			return nil
		}
		switch w.kind {
		case os.ModeSymlink:
			got, err := os.Readlink(p)
			if err != nil || got != w.target {
				t.Errorf("%s: readlink %q, %v; want %q", rel, got, err, w.target)
			}
			if st.Size() != int64(len(w.target)) {
				t.Errorf("%s: symlink size %d, want %d", rel, st.Size(), len(w.target))
			}
			return nil
		case 0:
			if st.Size() != int64(len(w.data)) {
				t.Errorf("%s: size %d, want %d", rel, st.Size(), len(w.data))
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%s: %v", rel, err)
			} else if !bytes.Equal(got, w.data) {
				t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(got), len(w.data))
			}
		}
		if st.Mode().Perm() != w.perm {
			t.Errorf("%s: mode %v, want %v", rel, st.Mode().Perm(), w.perm)
		}
		gotX := userXattrs(t, p)
		if len(gotX) != len(w.xattrs) {
			t.Errorf("%s: xattrs %v, want %v", rel, keys(gotX), keys(w.xattrs))
		}
		for k, v := range w.xattrs {
			if gotX[k] != v {
				t.Errorf("%s: xattr %s = %q, want %q", rel, k, trunc(gotX[k]), trunc(v))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel := range want {
		if !seen[rel] {
			t.Errorf("missing entry %q", rel)
		}
	}
	// The hard link is one inode.
	if _, ok := want["private-link"]; ok {
		a, err1 := os.Stat(filepath.Join(root, "private"))
		b, err2 := os.Stat(filepath.Join(root, "private-link"))
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("private and private-link are not the same inode (%v, %v)", err1, err2)
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

// userXattrs reads all user.* xattrs of p (not following a symlink).
func userXattrs(t testing.TB, p string) map[string]string {
	t.Helper()
	out := map[string]string{}
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return out
		}
		t.Fatalf("listxattr %s: %v", p, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out[name] = string(v[:vs])
	}
	return out
}
