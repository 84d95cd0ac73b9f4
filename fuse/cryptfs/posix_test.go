package cryptfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
	"kmsagent/fuse/contentenc"
)

// model applies the same operations to an in-memory byte slice.
type model []byte

func (m *model) writeAt(p []byte, off int) {
	if end := off + len(p); end > len(*m) {
		*m = append(*m, make([]byte, end-len(*m))...)
	}
	copy((*m)[off:], p)
}

func (m *model) truncate(n int) {
	if n <= len(*m) {
		*m = (*m)[:n]
		return
	}
	*m = append(*m, make([]byte, n-len(*m))...)
}

func mustEqualFile(t *testing.T, p string, want []byte) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(want)) {
		t.Fatalf("%s: st_size %d, want %d", filepath.Base(p), st.Size(), len(want))
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(p), err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: content differs at byte %d (len %d, want %d)", filepath.Base(p), i, len(got), len(want))
	}
}

func mustErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

// cipherEntries lists the names in a cipher directory.
func cipherEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkLongNames verifies that every gocryptfs.longname.X in the cipher
// tree has its .name file and no .name file is orphaned.
func checkLongNames(t *testing.T, cipher string) {
	t.Helper()
	err := filepath.WalkDir(cipher, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		names := map[string]bool{}
		for _, n := range cipherEntries(t, p) {
			names[n] = true
		}
		for n := range names {
			if !strings.HasPrefix(n, "gocryptfs.longname.") {
				continue
			}
			if base, ok := strings.CutSuffix(n, ".name"); ok {
				if !names[base] {
					t.Errorf("orphaned %s in %s", n, p)
				}
			} else if !names[n+".name"] {
				t.Errorf("%s in %s has no .name file", n, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPOSIX(t *testing.T) {
	m, _ := newFS(t)
	long := func(c byte) string { return strings.Repeat(string(c), 230) }

	cases := []struct {
		name string
		fn   func(t *testing.T, dir string)
	}{
		{"write-at-offsets", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var want model
			for i, w := range []struct{ off, n int }{
				{0, 10}, {5, 4096}, {4095, 2}, {8191, 1}, {100, 3}, {20000, 5000},
				{12288, 4096}, {4096, 4096}, {1, 70000}, {65536 + 7, 200000}, {3, 1},
			} {
				data := randBytes(uint64(100+i), w.n)
				if _, err := f.WriteAt(data, int64(w.off)); err != nil {
					t.Fatal(err)
				}
				want.writeAt(data, w.off)
				// Read back an unaligned window through the same fd.
				got := make([]byte, w.n+10)
				k, err := f.ReadAt(got, int64(w.off)-min(int64(w.off), 5))
				if err != nil && k == 0 {
					t.Fatal(err)
				}
			}
			mustEqualFile(t, p, want)
			// Unaligned reads of every size around block boundaries.
			for _, off := range []int{0, 1, 4095, 4096, 4097, 12287, len(want) - 1} {
				for _, n := range []int{1, 2, 4095, 4096, 4097, 9000} {
					buf := make([]byte, n)
					k, err := f.ReadAt(buf, int64(off))
					if err != nil && k != min(n, len(want)-off) {
						t.Fatalf("read %d@%d: %d, %v", n, off, k, err)
					}
					if !bytes.Equal(buf[:k], want[off:off+k]) {
						t.Fatalf("read %d@%d differs", n, off)
					}
				}
			}
		}},
		{"sparse-holes", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "sparse")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			var want model
			for _, w := range []struct {
				off int
				s   string
			}{{10, "a"}, {1 << 20, "b"}, {1<<20 + 4096*3 + 5, "c"}, {50 << 20, "end"}} {
				if _, err := f.WriteAt([]byte(w.s), int64(w.off)); err != nil {
					t.Fatal(err)
				}
				want.writeAt([]byte(w.s), w.off)
			}
			f.Close()
			mustEqualFile(t, p, want)
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 > 1<<20 {
				t.Errorf("sparse file of %d bytes uses %d bytes on disk", st.Size, st.Blocks*512)
			}
		}},
		{"truncate", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "t")
			want := model(randBytes(3, 10000))
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i, n := range []int{5000, 4096, 4097, 3, 9000, 8192, 8193, 1 << 20, 100, 0, 1, 0, 12289} {
				var err error
				if i%2 == 0 {
					err = f.Truncate(int64(n))
				} else {
					err = os.Truncate(p, int64(n))
				}
				if err != nil {
					t.Fatalf("truncate to %d: %v", n, err)
				}
				want.truncate(n)
				mustEqualFile(t, p, want)
				// Write into the new tail so later steps see data.
				tail := randBytes(uint64(i), 7)
				if _, err := f.WriteAt(tail, int64(n/2)); err != nil {
					t.Fatal(err)
				}
				want.writeAt(tail, n/2)
				mustEqualFile(t, p, want)
			}
		}},
		{"append", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "log")
			var want []byte
			f1, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f1.Close()
			f2, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f2.Close()
			for i := range 50 {
				line := []byte(strings.Repeat(strconv.Itoa(i), i*37%500+1) + "\n")
				f := f1
				if i%3 == 0 {
					f = f2
				}
				if _, err := f.Write(line); err != nil {
					t.Fatal(err)
				}
				want = append(want, line...)
			}
			mustEqualFile(t, p, want)
		}},
		{"fsync", func(t *testing.T, dir string) {
			f, err := os.Create(filepath.Join(dir, "s"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("data")); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync: %v", err)
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				t.Fatalf("fdatasync: %v", err)
			}
			d, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := d.Sync(); err != nil {
				t.Fatalf("fsync dir: %v", err)
			}
		}},
		{"fallocate", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "fa")
			want := model("0123456789")
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
				t.Fatalf("fallocate keep size: %v", err)
			}
			mustEqualFile(t, p, want)
			if err := unix.Fallocate(int(f.Fd()), 0, 5, 100000); err != nil {
				t.Fatalf("fallocate: %v", err)
			}
			want.truncate(100005)
			mustEqualFile(t, p, want)
			if err := unix.Fallocate(int(f.Fd()), 0, 0, 10); err != nil {
				t.Fatalf("fallocate inside: %v", err)
			}
			mustEqualFile(t, p, want)
			err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096)
			mustErrno(t, err, syscall.EOPNOTSUPP)
			if _, err := f.WriteAt([]byte("xyz"), 50000); err != nil {
				t.Fatal(err)
			}
			want.writeAt([]byte("xyz"), 50000)
			mustEqualFile(t, p, want)
		}},
		{"rename", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(a, []byte("A"), 0o644)
			os.WriteFile(b, []byte("B"), 0o644)
			// Over an existing file.
			if err := os.Rename(a, b); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, b, []byte("A"))
			if _, err := os.Stat(a); !os.IsNotExist(err) {
				t.Fatalf("old name still there: %v", err)
			}
			// Across directories, short -> long -> long (other dir) -> short.
			names := []string{filepath.Join(sub, "c"), filepath.Join(sub, long('r')), filepath.Join(dir, long('s')), filepath.Join(dir, long('s')), filepath.Join(dir, "d")}
			cur := b
			for _, n := range names {
				if err := os.Rename(cur, n); err != nil {
					t.Fatalf("rename %s -> %s: %v", filepath.Base(cur), filepath.Base(n), err)
				}
				mustEqualFile(t, n, []byte("A"))
				cur = n
			}
			// Long name over an existing long name.
			os.WriteFile(filepath.Join(dir, long('t')), []byte("T"), 0o644)
			os.WriteFile(filepath.Join(dir, long('u')), []byte("U"), 0o644)
			if err := os.Rename(filepath.Join(dir, long('t')), filepath.Join(dir, long('u'))); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, filepath.Join(dir, long('u')), []byte("T"))
			// A directory over an empty directory, and not over a full one.
			os.Mkdir(filepath.Join(dir, "d1"), 0o755)
			os.WriteFile(filepath.Join(dir, "d1", "x"), []byte("x"), 0o644)
			os.Mkdir(filepath.Join(dir, "empty"), 0o755)
			// (os.Rename refuses directory targets itself.)
			if err := unix.Rename(filepath.Join(dir, "d1"), filepath.Join(dir, "empty")); err != nil {
				t.Fatalf("dir over empty dir: %v", err)
			}
			mustEqualFile(t, filepath.Join(dir, "empty", "x"), []byte("x"))
			os.Mkdir(filepath.Join(dir, "d2"), 0o755)
			mustErrno(t, unix.Rename(filepath.Join(dir, "d2"), filepath.Join(dir, "empty")), syscall.ENOTEMPTY)
			// A directory with a long name, moved with its contents.
			if err := os.Rename(filepath.Join(dir, "empty"), filepath.Join(sub, long('v'))); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, filepath.Join(sub, long('v'), "x"), []byte("x"))
			// NOREPLACE and EXCHANGE.
			os.WriteFile(filepath.Join(dir, "e1"), []byte("1"), 0o644)
			os.WriteFile(filepath.Join(dir, long('e')), []byte("2"), 0o644)
			err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, "e1"), unix.AT_FDCWD, filepath.Join(dir, long('e')), unix.RENAME_NOREPLACE)
			mustErrno(t, err, syscall.EEXIST)
			if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, "e1"), unix.AT_FDCWD, filepath.Join(dir, long('e')), unix.RENAME_EXCHANGE); err != nil {
				t.Fatalf("exchange: %v", err)
			}
			mustEqualFile(t, filepath.Join(dir, "e1"), []byte("2"))
			mustEqualFile(t, filepath.Join(dir, long('e')), []byte("1"))
			// Rename to itself.
			if err := os.Rename(filepath.Join(dir, long('e')), filepath.Join(dir, long('e'))); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, filepath.Join(dir, long('e')), []byte("1"))
			checkLongNames(t, m.cipher)
		}},
		{"hardlink", func(t *testing.T, dir string) {
			a := filepath.Join(dir, "a")
			os.WriteFile(a, []byte("one"), 0o644)
			for _, n := range []string{"b", long('h')} {
				if err := os.Link(a, filepath.Join(dir, n)); err != nil {
					t.Fatalf("link %s: %v", n, err)
				}
			}
			st, err := os.Stat(a)
			if err != nil {
				t.Fatal(err)
			}
			if nl := st.Sys().(*syscall.Stat_t).Nlink; nl != 3 {
				t.Fatalf("nlink %d, want 3", nl)
			}
			// A write through one name is seen through the others.
			f, err := os.OpenFile(filepath.Join(dir, long('h')), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte(" two"))
			f.Close()
			mustEqualFile(t, filepath.Join(dir, "b"), []byte("one two"))
			if err := os.Remove(a); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, filepath.Join(dir, long('h')), []byte("one two"))
			if err := os.Remove(filepath.Join(dir, long('h'))); err != nil {
				t.Fatal(err)
			}
			checkLongNames(t, m.cipher)
		}},
		{"symlink", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "target"), []byte("t"), 0o644)
			for _, c := range []struct{ name, target string }{
				{"rel", "target"}, {"abs", "/nonexistent/x"}, {long('l'), "target"},
				{"longtarget", strings.Repeat("a/", 1400) + "target"}, {"dotdot", "../symlink/target"},
			} {
				p := filepath.Join(dir, c.name)
				if err := os.Symlink(c.target, p); err != nil {
					t.Fatalf("symlink %s: %v", c.name, err)
				}
				got, err := os.Readlink(p)
				if err != nil || got != c.target {
					t.Fatalf("readlink %s: %q, %v", c.name, got, err)
				}
				st, err := os.Lstat(p)
				if err != nil || st.Mode().Type() != os.ModeSymlink || st.Size() != int64(len(c.target)) {
					t.Fatalf("lstat %s: %v %v", c.name, st, err)
				}
			}
			mustEqualFile(t, filepath.Join(dir, long('l')), []byte("t"))
			mustEqualFile(t, filepath.Join(dir, "dotdot"), []byte("t"))
			err := os.Symlink(strings.Repeat("x", 3500), filepath.Join(dir, "toolong"))
			mustErrno(t, err, syscall.ENAMETOOLONG)
		}},
		{"mkdir-rmdir", func(t *testing.T, dir string) {
			d := filepath.Join(dir, "d")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			mustErrno(t, os.Mkdir(d, 0o700), syscall.EEXIST)
			os.WriteFile(filepath.Join(d, "f"), nil, 0o644)
			mustErrno(t, syscall.Rmdir(d), syscall.ENOTEMPTY)
			os.Remove(filepath.Join(d, "f"))
			if err := syscall.Rmdir(d); err != nil {
				t.Fatalf("rmdir: %v", err)
			}
			mustErrno(t, syscall.Rmdir(d), syscall.ENOENT)
			// Mode 0 directories work too, and long-named ones.
			for _, n := range []string{"zero", long('m')} {
				p := filepath.Join(dir, n)
				if err := os.Mkdir(p, 0); err != nil {
					t.Fatal(err)
				}
				st, err := os.Stat(p)
				if err != nil || st.Mode().Perm() != 0 || !st.IsDir() {
					t.Fatalf("stat %s: %v %v", n, st.Mode(), err)
				}
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			// Deep trees and rm -rf.
			deep := filepath.Join(dir, "a", "b", "c", long('n'), "e")
			if err := os.MkdirAll(deep, 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(deep, "f"), []byte("x"), 0o644)
			if err := os.RemoveAll(filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
			checkLongNames(t, m.cipher)
		}},
		{"readdir-large", func(t *testing.T, dir string) {
			want := map[string]bool{}
			for i := range 2500 {
				n := "file-" + strconv.Itoa(i)
				if i%100 == 0 {
					n = strconv.Itoa(i) + long('q')
				}
				f, err := os.Create(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
				want[n] = true
			}
			os.Mkdir(filepath.Join(dir, "subdir"), 0o755)
			want["subdir"] = true
			// Read in small batches so the kernel continues at offsets.
			d, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := map[string]bool{}
			for {
				names, err := d.Readdirnames(37)
				for _, n := range names {
					if got[n] {
						t.Fatalf("%q listed twice", n)
					}
					got[n] = true
				}
				if err != nil {
					break
				}
			}
			if len(got) != len(want) {
				t.Fatalf("listed %d entries, want %d", len(got), len(want))
			}
			for n := range want {
				if !got[n] {
					t.Fatalf("%q not listed", n)
				}
			}
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) != len(want) {
				t.Fatalf("ReadDir: %d, %v", len(ents), err)
			}
			for _, e := range ents {
				if e.IsDir() != (e.Name() == "subdir") {
					t.Fatalf("%s: wrong type", e.Name())
				}
			}
		}},
		{"attributes", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			os.WriteFile(p, []byte("x"), 0o644)
			for _, mode := range []os.FileMode{0, 0o600, 0o755, 0o4755 & os.ModePerm, 0o777} {
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
				st, _ := os.Stat(p)
				if st.Mode().Perm() != mode {
					t.Fatalf("mode %v, want %v", st.Mode().Perm(), mode)
				}
			}
			if err := os.Chmod(p, 0o644|os.ModeSetgid); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(p); st.Mode()&os.ModeSetgid == 0 {
				t.Fatalf("setgid bit lost: %v", st.Mode())
			}
			if err := os.Lchown(p, 1234, 5678); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(p)
			if s := st.Sys().(*syscall.Stat_t); s.Uid != 1234 || s.Gid != 5678 {
				t.Fatalf("owner %d:%d", s.Uid, s.Gid)
			}
			atime := time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)
			mtime := time.Date(2011, 12, 13, 14, 15, 16, 170000000, time.UTC)
			if err := os.Chtimes(p, atime, mtime); err != nil {
				t.Fatal(err)
			}
			st, _ = os.Stat(p)
			s := st.Sys().(*syscall.Stat_t)
			if !st.ModTime().Equal(mtime) || !time.Unix(s.Atim.Unix()).Equal(atime) {
				t.Fatalf("times %v %v", time.Unix(s.Atim.Unix()), st.ModTime())
			}
			// UTIME_NOW, and times of a directory and of a symlink.
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}, 0); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(p); !st.ModTime().Equal(mtime) {
				t.Fatalf("mtime changed by atime-only update")
			}
			os.Symlink("f", filepath.Join(dir, "l"))
			ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "l"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatalf("lutimes: %v", err)
			}
			if st, _ := os.Lstat(filepath.Join(dir, "l")); !st.ModTime().Equal(mtime) {
				t.Fatalf("symlink mtime %v", st.ModTime())
			}
			if err := os.Chtimes(dir, atime, mtime); err != nil {
				t.Fatal(err)
			}
			// Through an open descriptor (fchmod, fchown, futimens).
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Chmod(0o640); err != nil {
				t.Fatal(err)
			}
			if err := f.Chown(42, 43); err != nil {
				t.Fatal(err)
			}
			if err := unix.UtimesNanoAt(int(f.Fd()), "", ts, unix.AT_EMPTY_PATH); err != nil {
				t.Fatalf("futimens: %v", err)
			}
			st, _ = f.Stat()
			if s := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o640 || s.Uid != 42 || s.Gid != 43 || !st.ModTime().Equal(mtime) {
				t.Fatalf("after f*: %v %d:%d %v", st.Mode(), s.Uid, s.Gid, st.ModTime())
			}
		}},
		{"xattr", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			os.WriteFile(p, nil, 0o644)
			for _, target := range []string{p, dir} {
				if err := unix.Setxattr(target, "user.a", []byte("1"), 0); err != nil {
					t.Fatal(err)
				}
				if err := unix.Setxattr(target, "user.b", bytes.Repeat([]byte("b"), 1500), 0); err != nil {
					t.Fatal(err)
				}
				mustErrno(t, unix.Setxattr(target, "user.a", []byte("2"), unix.XATTR_CREATE), syscall.EEXIST)
				mustErrno(t, unix.Setxattr(target, "user.c", []byte("2"), unix.XATTR_REPLACE), syscall.ENODATA)
				if err := unix.Setxattr(target, "user.a", []byte("22"), unix.XATTR_REPLACE); err != nil {
					t.Fatal(err)
				}
				x := userXattrs(t, target)
				if len(x) != 2 || x["user.a"] != "22" || len(x["user.b"]) != 1500 {
					t.Fatalf("xattrs %v", keys(x))
				}
				small := make([]byte, 1)
				_, err := unix.Getxattr(target, "user.a", small)
				mustErrno(t, err, syscall.ERANGE)
				_, err = unix.Getxattr(target, "user.none", small)
				mustErrno(t, err, syscall.ENODATA)
				if err := unix.Removexattr(target, "user.a"); err != nil {
					t.Fatal(err)
				}
				mustErrno(t, unix.Removexattr(target, "user.a"), syscall.ENODATA)
				if x := userXattrs(t, target); len(x) != 1 {
					t.Fatalf("after remove: %v", keys(x))
				}
			}
			// No label: "not supported" where SELinux is off (see
			// TestXattrSELinuxLabel).
			_, err := unix.Getxattr(p, "security.selinux", make([]byte, 10))
			if labelsUnsupported() {
				mustErrno(t, err, syscall.EOPNOTSUPP)
			} else {
				mustErrno(t, err, syscall.ENODATA)
			}
			// Names and values are encrypted in the cipher directory.
			var raw []byte
			filepath.WalkDir(m.cipher, func(cp string, d os.DirEntry, err error) error {
				buf := make([]byte, 4096)
				if n, err := unix.Llistxattr(cp, buf); err == nil {
					raw = append(raw, buf[:n]...)
				}
				return nil
			})
			if bytes.Contains(raw, []byte("user.a")) || bytes.Contains(raw, []byte("user.b")) || !bytes.Contains(raw, []byte("user.gocryptfs.")) {
				t.Fatalf("cipher xattr names: %q", raw)
			}
		}},
		{"statfs", func(t *testing.T, dir string) {
			var st unix.Statfs_t
			if err := unix.Statfs(dir, &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks == 0 || st.Bsize == 0 {
				t.Fatalf("statfs: %+v", st)
			}
		}},
		{"long-names", func(t *testing.T, dir string) {
			for _, n := range []int{175, 176, 200, 254, 255} {
				name := strings.Repeat("é", n/2) + strings.Repeat("z", n%2)
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
					t.Fatalf("%d-byte name: %v", len(name), err)
				}
				mustEqualFile(t, p, []byte(name))
			}
			mustErrno(t, os.WriteFile(filepath.Join(dir, strings.Repeat("z", 256)), nil, 0o644), syscall.ENAMETOOLONG)
			ents, _ := os.ReadDir(dir)
			if len(ents) != 5 {
				t.Fatalf("%d entries", len(ents))
			}
			for _, e := range ents {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
			checkLongNames(t, m.cipher)
		}},
		{"unlink-open-file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write([]byte("before"))
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte(" after"), 6); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 20)
			n, _ := f.ReadAt(buf, 0)
			if string(buf[:n]) != "before after" {
				t.Fatalf("read %q", buf[:n])
			}
			st, err := f.Stat()
			if err != nil || st.Size() != 12 {
				t.Fatalf("fstat: %v %v", st, err)
			}
		}},
		{"o-trunc-and-excl", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			os.WriteFile(p, randBytes(1, 9000), 0o644)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, p, []byte("new"))
			// The handle opened before the truncation writes with the new
			// file ID.
			if _, err := f.WriteAt([]byte("!"), 3); err != nil {
				t.Fatal(err)
			}
			mustEqualFile(t, p, []byte("new!"))
			_, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			mustErrno(t, err, syscall.EEXIST)
			_, err = os.Open(filepath.Join(dir, "missing"))
			mustErrno(t, err, syscall.ENOENT)
		}},
		{"mknod", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "fifo")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := os.Lstat(p)
			if err != nil || st.Mode().Type() != os.ModeNamedPipe {
				t.Fatalf("fifo: %v %v", st.Mode(), err)
			}
		}},
		{"mmap", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "mapped")
			os.WriteFile(p, nil, 0o644)
			runHelperProcess(t, "mmap-write", p)
			mustEqualFile(t, p, mmapPattern(mmapSize))
			q := filepath.Join(dir, "written")
			os.WriteFile(q, mmapPattern(mmapSize), 0o644)
			runHelperProcess(t, "mmap-read", q)
		}},
		{"locks", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "lock")
			os.WriteFile(p, nil, 0o644)
			f1, _ := os.OpenFile(p, os.O_RDWR, 0)
			defer f1.Close()
			f2, _ := os.OpenFile(p, os.O_RDWR, 0)
			defer f2.Close()
			if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				t.Fatalf("flock: %v", err)
			}
			mustErrno(t, unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB), syscall.EWOULDBLOCK)
			unix.Flock(int(f1.Fd()), unix.LOCK_UN)
			if err := unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
				t.Fatalf("flock after unlock: %v", err)
			}
			unix.Flock(int(f2.Fd()), unix.LOCK_UN)
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 100}
			if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
				t.Fatalf("fcntl lock: %v", err)
			}
			lk2 := unix.Flock_t{Type: unix.F_WRLCK, Start: 50, Len: 10}
			mustErrno(t, unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk2), syscall.EAGAIN)
			lk3 := unix.Flock_t{Type: unix.F_WRLCK, Start: 100, Len: 10}
			if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk3); err != nil {
				t.Fatalf("non-overlapping lock: %v", err)
			}
			q := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 10}
			if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_GETLK, &q); err != nil || q.Type != unix.F_WRLCK {
				t.Fatalf("getlk: %+v %v", q, err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := m.path(tc.name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.fn(t, dir)
		})
	}
	if strings.Contains(m.logs.String(), "level=WARN") {
		t.Errorf("unexpected warnings:\n%s", m.logs.String())
	}
	// Plaintext names never reach the cipher directory.
	filepath.WalkDir(m.cipher, func(p string, d os.DirEntry, err error) error {
		if err == nil && slices.ContainsFunc(cases, func(c struct {
			name string
			fn   func(t *testing.T, dir string)
		}) bool {
			return d.Name() == c.name
		}) {
			t.Errorf("plaintext name in cipher dir: %s", p)
		}
		return nil
	})
}

func TestReadOnly(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	want := writeTree(t, m.mnt)
	m.unmount(t)
	// Our own checks (Options.ReadOnly) and the kernel's (ro mount).
	for _, c := range []struct {
		name string
		o    Options
		mo   MountOptions
	}{{"options", Options{ReadOnly: true}, MountOptions{}}, {"mount", Options{ReadOnly: true}, MountOptions{ReadOnly: true}}} {
		t.Run(c.name, func(t *testing.T) {
			m := mountFS(t, cipher, k, c.o, c.mo)
			checkTree(t, m.mnt, want)
			mustErrno(t, os.WriteFile(m.path("new"), nil, 0o644), syscall.EROFS)
			_, err := os.OpenFile(m.path("size-1"), os.O_WRONLY, 0)
			mustErrno(t, err, syscall.EROFS)
			mustErrno(t, os.Remove(m.path("size-1")), syscall.EROFS)
			mustErrno(t, os.Mkdir(m.path("d"), 0o755), syscall.EROFS)
			mustErrno(t, os.Chmod(m.path("size-1"), 0o600), syscall.EROFS)
			mustErrno(t, unix.Setxattr(m.path("size-1"), "user.x", []byte("1"), 0), syscall.EROFS)
			mustErrno(t, os.Rename(m.path("size-1"), m.path("x")), syscall.EROFS)
			mustErrno(t, os.Symlink("x", m.path("l")), syscall.EROFS)
			mustErrno(t, os.Truncate(m.path("size-1"), 0), syscall.EROFS)
		})
	}
}

// TestFewDirFds keeps at most two directory descriptors open, so that
// most operations reopen their directory from its parent's descriptor.
func TestFewDirFds(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{MaxOpenDirs: 2}, MountOptions{})
	want := writeTree(t, m.mnt)
	deep := m.path("a", "b", long200(), "c", "d")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Renaming an ancestor must not confuse cached descriptors or names.
	if err := os.Rename(m.path("a", "b"), m.path("dir", "moved")); err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, m.path("dir", "moved", long200(), "c", "d", "f"), []byte("deep"))
	if err := os.RemoveAll(m.path("dir", "moved")); err != nil {
		t.Fatal(err)
	}
	os.Remove(m.path("a"))
	checkTree(t, m.mnt, want)
	m.unmount(t)
	m = mountFS(t, cipher, k, Options{MaxOpenDirs: 1}, MountOptions{})
	checkTree(t, m.mnt, want)
	checkLongNames(t, cipher)
}

func long200() string { return strings.Repeat("y", 200) }

// TestSeekHoles checks SEEK_DATA and SEEK_HOLE: exact on block-aligned
// holes, and never claiming a hole where there is data.
func TestSeekHoles(t *testing.T) {
	m, _ := newFS(t)
	p := m.path("sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want model
	for _, w := range []struct {
		off int
		s   string
	}{{0, "a"}, {10 << 20, "b"}, {20<<20 + 5, "c"}, {20<<20 + 9000, "d"}, {40 << 20, "e"}} {
		f.WriteAt([]byte(w.s), int64(w.off))
		want.writeAt([]byte(w.s), w.off)
	}
	fd := int(f.Fd())
	seek := func(off int64, whence int) (int64, error) { return unix.Seek(fd, off, whence) }
	if h, err := seek(0, unix.SEEK_HOLE); err != nil || h < bs || h > 10<<20 {
		t.Errorf("SEEK_HOLE 0: %d, %v", h, err)
	}
	if d, err := seek(bs, unix.SEEK_DATA); err != nil || d != 10<<20 {
		t.Errorf("SEEK_DATA 4096: %d, %v; want %d", d, err, 10<<20)
	}
	if d, err := seek(3*bs, unix.SEEK_DATA); err != nil || d != 10<<20 {
		t.Errorf("SEEK_DATA 12288: %d, %v; want %d", d, err, 10<<20)
	}
	if h, err := seek(40<<20, unix.SEEK_HOLE); err != nil || h != int64(len(want)) {
		t.Errorf("SEEK_HOLE at last block: %d, %v; want EOF %d", h, err, len(want))
	}
	if _, err := seek(int64(len(want)), unix.SEEK_DATA); !errorsIsErrno(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA at EOF: %v, want ENXIO", err)
	}
	// Walk data and holes; every reported hole reads as zeros and all
	// data is inside reported data ranges.
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(want)); {
		d, err := seek(off, unix.SEEK_DATA)
		if errorsIsErrno(err, syscall.ENXIO) {
			d = int64(len(want))
		} else if err != nil {
			t.Fatal(err)
		}
		for x := off; x < d; x += int64(len(buf)) {
			n := min(int64(len(buf)), d-x)
			if !allZero(want[x : x+n]) {
				t.Fatalf("SEEK_DATA from %d skipped data before %d", off, d)
			}
		}
		if d >= int64(len(want)) {
			break
		}
		h, err := seek(d, unix.SEEK_HOLE)
		if err != nil || h <= d {
			t.Fatalf("SEEK_HOLE %d: %d, %v", d, h, err)
		}
		off = h
	}
	mustEqualFile(t, p, want)
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestSeekLikePlainFile lays out the same sparse files in the mount and
// on the backing file system and compares SEEK_DATA and SEEK_HOLE at
// interesting offsets. Holes here span whole blocks and several file
// system blocks, where the answers must be exact.
func TestSeekLikePlainFile(t *testing.T) {
	m, _ := newFS(t)
	plain := t.TempDir()
	type write struct {
		off int64
		n   int
	}
	cases := []struct {
		name   string
		writes []write
		size   int64 // truncate to this afterwards, if not 0
	}{
		{"hole-first", []write{{1 << 20, 1}}, 0},
		{"hole-first-aligned", []write{{64 << 10, bs}}, 1 << 20},
		{"data-hole-data", []write{{0, 10}, {2 << 20, 10}}, 0},
		{"only-hole", nil, 1 << 20},
		{"data-hole", []write{{0, 3 * bs}}, 1 << 20},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var files [2]*os.File
			for j, dir := range []string{m.mnt, plain} {
				f, err := os.Create(filepath.Join(dir, c.name))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				for _, w := range c.writes {
					if _, err := f.WriteAt(randBytes(uint64(i), w.n), w.off); err != nil {
						t.Fatal(err)
					}
				}
				if c.size != 0 {
					if err := f.Truncate(c.size); err != nil {
						t.Fatal(err)
					}
				}
				files[j] = f
			}
			st, err := files[1].Stat()
			if err != nil {
				t.Fatal(err)
			}
			size := st.Size()
			offs := []int64{0, 1, bs - 1, bs, 3*bs + 5, 64 << 10, 1 << 20, 2 << 20, size - 1, size}
			for _, w := range c.writes {
				offs = append(offs, w.off, w.off+int64(w.n)-1)
			}
			for _, off := range offs {
				if off < 0 {
					continue
				}
				for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
					got, gerr := unix.Seek(int(files[0].Fd()), off, whence)
					want, werr := unix.Seek(int(files[1].Fd()), off, whence)
					if got != want || gerr != werr {
						name := map[int]string{unix.SEEK_DATA: "SEEK_DATA", unix.SEEK_HOLE: "SEEK_HOLE"}[whence]
						t.Errorf("%s %d: %d, %v; plain file: %d, %v", name, off, got, gerr, want, werr)
					}
				}
			}
		})
	}
}

// TestFallocateSize checks that fallocate reserves the cipher bytes the
// range takes, not more, and that mode 0 sets the size.
func TestFallocateSize(t *testing.T) {
	m, _ := newFS(t)
	var sfs unix.Statfs_t
	if err := unix.Statfs(m.cipher, &sfs); err != nil {
		t.Fatal(err)
	}
	fsb := uint64(sfs.Bsize)
	for _, n := range []uint64{100, 4000, 5000, 2 * bs, 10000} {
		for _, mode := range []uint32{0, unix.FALLOC_FL_KEEP_SIZE} {
			p := m.path("falloc-" + strconv.FormatUint(n, 10) + "-" + strconv.Itoa(int(mode)))
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Fallocate(int(f.Fd()), mode, 0, int64(n)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			wantSize := int64(n)
			if mode != 0 {
				wantSize = 0
			}
			// What a file of n bytes takes on the backing file system.
			want := (contentenc.CipherSize(n) + fsb - 1) / fsb * fsb / 512
			if st.Size != wantSize || uint64(st.Blocks) != want {
				t.Errorf("fallocate(mode %d, 0, %d): size %d, %d blocks; want %d, %d blocks", mode, n, st.Size, st.Blocks, wantSize, want)
			}
			if mode == 0 {
				mustEqualFile(t, p, make([]byte, n))
			}
		}
	}
}

// TestRootInode checks that the mount root has the inode number of the
// cipher directory, as in gocryptfs, stable across mounts.
func TestRootInode(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	var want unix.Stat_t
	if err := unix.Stat(cipher, &want); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m := mountFS(t, cipher, k, Options{}, MountOptions{})
		var st unix.Stat_t
		if err := unix.Stat(m.mnt, &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino != want.Ino {
			t.Errorf("root inode %d, want %d (the cipher directory's)", st.Ino, want.Ino)
		}
		m.unmount(t)
	}
}
