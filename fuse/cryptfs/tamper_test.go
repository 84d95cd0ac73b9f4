package cryptfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
	"kmsagent/fuse/contentenc"
)

// cipherPathOf finds the cipher file of a plaintext file by inode number.
func cipherPathOf(t *testing.T, m *testMount, rel string) string {
	t.Helper()
	st, err := os.Lstat(m.path(rel))
	if err != nil {
		t.Fatal(err)
	}
	ino := st.Sys().(*syscall.Stat_t).Ino
	var found string
	filepath.WalkDir(m.cipher, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cst, err := os.Lstat(p); err == nil && cst.Sys().(*syscall.Stat_t).Ino == ino {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no cipher file for %s", rel)
	}
	return found
}

func modifyFile(t *testing.T, p string, fn func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readBlock reads plaintext block i of a file through a fresh descriptor.
func readBlock(p string, i int) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, bs)
	n, err := f.ReadAt(buf, int64(i*bs))
	if n > 0 {
		err = nil
	}
	return buf[:n], err
}

func TestTamper(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})

	data := map[string][]byte{
		"flip":       randBytes(1, 5*bs),
		"cut":        randBytes(2, 3*bs+1000),
		"cutsmall":   randBytes(3, 2*bs+100),
		"swap":       randBytes(4, 5*bs),
		"hdr-victim": randBytes(5, 3*bs),
		"hdr-donor":  randBytes(6, 3*bs),
		"intact":     randBytes(7, 2*bs+7),
		"xa":         []byte("x"),
	}
	for n, d := range data {
		if err := os.WriteFile(m.path(n), d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("target-of-symlink", m.path("sym"))
	if err := unix.Setxattr(m.path("xa"), "user.k", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	cp := map[string]string{}
	for _, n := range []string{"flip", "cut", "cutsmall", "swap", "hdr-victim", "hdr-donor", "sym", "xa"} {
		cp[n] = cipherPathOf(t, m, n)
	}
	m.unmount(t)

	off := func(b int) int { return int(contentenc.CipherOff(uint64(b))) }
	modifyFile(t, cp["flip"], func(b []byte) []byte { b[off(2)+100] ^= 0x04; return b })
	modifyFile(t, cp["cut"], func(b []byte) []byte { return b[:len(b)-5] })
	modifyFile(t, cp["cutsmall"], func(b []byte) []byte { return b[:off(2)+10] })
	modifyFile(t, cp["swap"], func(b []byte) []byte {
		b1 := append([]byte(nil), b[off(1):off(2)]...)
		copy(b[off(1):off(2)], b[off(3):off(4)])
		copy(b[off(3):off(4)], b1)
		return b
	})
	donor, err := os.ReadFile(cp["hdr-donor"])
	if err != nil {
		t.Fatal(err)
	}
	modifyFile(t, cp["hdr-victim"], func(b []byte) []byte { copy(b, donor[:contentenc.HeaderLen]); return b })
	// Symlink target: flip one base64 character.
	target, _ := os.Readlink(cp["sym"])
	tb := []byte(target)
	tb[30] ^= 0x01
	if tb[30] == '/' || tb[30] == 0 {
		tb[30] = 'A'
	}
	os.Remove(cp["sym"])
	os.Symlink(string(tb), cp["sym"])
	// Xattr value: flip a bit of the stored (encrypted) value.
	names := make([]byte, 1024)
	n, _ := unix.Llistxattr(cp["xa"], names)
	xname := strings.TrimRight(string(names[:n]), "\x00")
	val := make([]byte, 1024)
	vn, err := unix.Lgetxattr(cp["xa"], xname, val)
	if err != nil {
		t.Fatalf("cipher xattr %q: %v", xname, err)
	}
	val[vn-1] ^= 1
	unix.Lsetxattr(cp["xa"], xname, val[:vn], 0)
	// Entries that are not encrypted names.
	os.WriteFile(filepath.Join(cipher, "not a name!"), nil, 0o644)
	os.WriteFile(filepath.Join(cipher, "AAAAAAAAAAAAAAAAAAAAAA"), nil, 0o644)
	os.WriteFile(filepath.Join(cipher, "kmsagent.json"), []byte("{}"), 0o600)

	m = mountFS(t, cipher, k, Options{}, MountOptions{})
	expectBlocks := func(name string, good []int, bad []int) {
		t.Helper()
		p := m.path(name)
		for range 2 { // twice: the second time must not log again
			for _, b := range good {
				got, err := readBlock(p, b)
				want := data[name][b*bs : min((b+1)*bs, len(data[name]))]
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s block %d: %v (%d bytes)", name, b, err, len(got))
				}
			}
			for _, b := range bad {
				got, err := readBlock(p, b)
				if !errorsIsErrno(err, syscall.EIO) {
					t.Errorf("%s block %d: got %d bytes, err %v; want EIO", name, b, len(got), err)
				}
			}
		}
		if len(bad) > 0 {
			if _, err := os.ReadFile(p); !errorsIsErrno(err, syscall.EIO) {
				t.Errorf("%s: whole-file read: %v, want EIO", name, err)
			}
		}
	}
	expectBlocks("flip", []int{0, 1, 3, 4}, []int{2})
	expectBlocks("cut", []int{0, 1, 2}, []int{3})
	expectBlocks("swap", []int{0, 2, 4}, []int{1, 3})
	expectBlocks("hdr-victim", nil, []int{0, 1, 2})
	expectBlocks("hdr-donor", []int{0, 1, 2}, nil)
	expectBlocks("intact", []int{0, 1, 2}, nil)
	// A last block too short to hold data is cut off the plaintext size.
	if st, err := os.Stat(m.path("cutsmall")); err != nil || st.Size() != 2*bs {
		t.Errorf("cutsmall: size %v, %v; want %d", st.Size(), err, 2*bs)
	}
	mustEqualFile(t, m.path("cutsmall"), data["cutsmall"][:2*bs])
	if st, err := os.Stat(m.path("cut")); err != nil || st.Size() != int64(len(data["cut"])-5) {
		t.Errorf("cut: size %v, %v", st.Size(), err)
	}

	if _, err := os.Readlink(m.path("sym")); !errorsIsErrno(err, syscall.EIO) {
		t.Errorf("tampered symlink: %v, want EIO", err)
	}
	if _, err := unix.Getxattr(m.path("xa"), "user.k", make([]byte, 100)); !errorsIsErrno(err, syscall.EIO) {
		t.Errorf("tampered xattr: %v, want EIO", err)
	}

	// Writing into a damaged block: a partial write needs the old block
	// and fails; a whole-block overwrite replaces it.
	f, err := os.OpenFile(m.path("flip"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 2*bs+5); !errorsIsErrno(err, syscall.EIO) {
		t.Errorf("partial write into bad block: %v, want EIO", err)
	}
	fresh := randBytes(99, bs)
	if _, err := f.WriteAt(fresh, 2*bs); err != nil {
		t.Errorf("full-block overwrite: %v", err)
	}
	f.Close()
	want := append([]byte(nil), data["flip"]...)
	copy(want[2*bs:], fresh)
	mustEqualFile(t, m.path("flip"), want)

	// Invalid names are hidden, kmsagent.json silently.
	for range 2 {
		ents, err := os.ReadDir(m.mnt)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if len(got) != len(data)+1 {
			t.Errorf("listing: %v", got)
		}
	}

	logs := m.logs.String()
	t.Log(logs)
	for _, want := range []struct {
		substr string
		count  int
	}{
		{`file=/flip ino=`, 1},
		{`block=2 `, 1}, // flip; swap's second bad block is 3
		{`file=/swap ino=`, 2},
		{`file=/cut ino=`, 1},
		{`file=/hdr-victim ino=`, 1}, // one line for the file, not per block
		{`does not match the file's blocks`, 1},
		{`cipher_name="not a name!"`, 1},
		{`cipher_name=AAAAAAAAAAAAAAAAAAAAAA`, 1},
		{`kmsagent.json`, 0},
		{`file=/cutsmall`, 1},
		{`file=/sym`, 1},
		{`file=/xa`, 1},
	} {
		if c := strings.Count(logs, want.substr); c != want.count {
			t.Errorf("log has %d lines with %q, want %d", c, want.substr, want.count)
		}
	}
	if strings.Contains(logs, k.hex) {
		t.Error("log contains the master key")
	}
}

func errorsIsErrno(err error, e syscall.Errno) bool {
	for err != nil {
		if x, ok := err.(syscall.Errno); ok {
			return x == e
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestCheckKey(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	other := newTestKey(t)
	if err := CheckKey(cipher, other.core); !errors.Is(err, ErrKeyUnverified) {
		t.Fatalf("empty root: %v, want ErrKeyUnverified", err)
	}
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	os.Mkdir(m.path("only-a-dir"), 0o755)
	m.unmount(t)
	if err := CheckKey(cipher, other.core); err == nil {
		t.Fatal("wrong key accepted on names")
	}
	m = mountFS(t, cipher, k, Options{}, MountOptions{})
	os.WriteFile(m.path("file"), []byte("content"), 0o644)
	m.unmount(t)
	if err := CheckKey(cipher, k.core); err != nil {
		t.Fatalf("right key: %v", err)
	}
	err := CheckKey(cipher, other.core)
	if err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("wrong key: %v", err)
	}
	if err := CheckKey(t.TempDir(), k.core); err == nil {
		t.Fatal("directory without diriv accepted")
	}
}
