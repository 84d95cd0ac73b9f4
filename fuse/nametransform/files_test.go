package nametransform

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDirIVRoundTrip(t *testing.T) {
	fd, dir := openDir(t)
	if err := WriteDirIVAt(fd); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, DirIVFilename))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != DirIVPerm || st.Size() != DirIVLen {
		t.Fatalf("diriv mode %v size %d, want %o and %d", st.Mode().Perm(), st.Size(), DirIVPerm, DirIVLen)
	}
	iv, err := ReadDirIVAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, DirIVFilename))
	if !bytes.Equal(iv, onDisk) {
		t.Fatal("ReadDirIVAt disagrees with the file")
	}
	// Never replace an existing IV.
	if err := WriteDirIVAt(fd); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second WriteDirIVAt: err = %v, want EEXIST", err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, DirIVFilename)); !bytes.Equal(again, onDisk) {
		t.Fatal("failed second write changed the IV")
	}
}

func TestWriteDirIVRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 4 {
		fd, _ := openDir(t)
		if err := WriteDirIVAt(fd); err != nil {
			t.Fatal(err)
		}
		iv, err := ReadDirIVAt(fd)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(iv)] {
			t.Fatal("repeated directory IV")
		}
		seen[string(iv)] = true
	}
}

func TestReadDirIVRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  error
	}{
		{"missing", func(string) error { return nil }, syscall.ENOENT},
		{"short", writeIV(make15()), ErrDirIV},
		{"long", writeIV(bytes.Repeat([]byte{1}, 17)), ErrDirIV},
		{"empty", writeIV(nil), ErrDirIV},
		{"all-zero", writeIV(make([]byte, 16)), ErrDirIV},
		{"symlink", func(dir string) error {
			if err := os.WriteFile(filepath.Join(dir, "real"), bytes.Repeat([]byte{1}, 16), 0o444); err != nil {
				return err
			}
			return os.Symlink("real", filepath.Join(dir, DirIVFilename))
		}, syscall.ELOOP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, dir := openDir(t)
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadDirIVAt(fd); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func make15() []byte { return bytes.Repeat([]byte{1}, 15) }

func writeIV(b []byte) func(string) error {
	return func(dir string) error { return os.WriteFile(filepath.Join(dir, DirIVFilename), b, 0o444) }
}

func TestLongNameFiles(t *testing.T) {
	n := newNT(t, katMaster())
	fd, dir := openDir(t)
	plain := strings.Repeat("long name ", 20)
	hashed, err := n.EncryptAndHashName(plain, katDirIV)
	if err != nil || NameType(hashed) != NameLongContent {
		t.Fatalf("EncryptAndHashName = %q, %v", hashed, err)
	}
	full, _ := n.EncryptName(plain, katDirIV)
	if err := WriteLongNameAt(fd, hashed, full); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, hashed+LongNameSuffix))
	if err != nil || st.Mode().Perm() != NamePerm {
		t.Fatalf("stat .name: %v, mode %v", err, st.Mode())
	}
	got, err := ReadLongNameAt(fd, hashed)
	if err != nil || got != full {
		t.Fatalf("ReadLongNameAt = %q, %v", got, err)
	}
	if p, err := n.DecryptName(got, katDirIV); err != nil || p != plain {
		t.Fatalf("DecryptName = %q, %v", p, err)
	}
	if err := WriteLongNameAt(fd, hashed, full); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second write: %v, want EEXIST", err)
	}
	if err := WriteLongNameAt(fd, HashLongName("other"), full); !errors.Is(err, ErrLongName) {
		t.Fatalf("write under the wrong hash: %v, want ErrLongName", err)
	}
	if err := DeleteLongNameAt(fd, hashed); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLongNameAt(fd, hashed); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read after delete: %v", err)
	}
}

func TestReadLongNameRejects(t *testing.T) {
	good := strings.Repeat("A", 300)
	for _, tc := range []struct {
		name     string
		hashName string
		content  string
	}{
		{"not a long name", "abc", good},
		{"empty", HashLongName(""), ""},
		{"too big", HashLongName(strings.Repeat("A", 400)), strings.Repeat("A", 400)},
		{"swapped", HashLongName(good), strings.Repeat("B", 300)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, dir := openDir(t)
			if err := os.WriteFile(filepath.Join(dir, tc.hashName+LongNameSuffix), []byte(tc.content), 0o444); err != nil {
				t.Fatal(err)
			}
			if got, err := ReadLongNameAt(fd, tc.hashName); !errors.Is(err, ErrLongName) {
				t.Fatalf("ReadLongNameAt = %q, %v; want ErrLongName", got, err)
			}
		})
	}
}

func TestXattrNames(t *testing.T) {
	n := newNT(t, katMaster())
	for _, tc := range []struct {
		name  string
		plain string
		errno syscall.Errno // 0: must round-trip
	}{
		{"user", "user.foo", 0},
		{"slash allowed", "user.a/b", 0},
		{"dots", "..", 0},
		{"other namespace", "trusted.x", 0},
		{"175 bytes fits", "user." + strings.Repeat("a", 170), 0},
		{"176 bytes", "user." + strings.Repeat("a", 171), syscall.ERANGE},
		{"256 bytes", strings.Repeat("a", 256), syscall.ERANGE},
		{"empty", "", syscall.EINVAL},
		{"nul", "user.a\x00b", syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, err := n.EncryptXattrName(tc.plain)
			if tc.errno != 0 {
				if !errors.Is(err, tc.errno) {
					t.Fatalf("EncryptXattrName = %q, %v; want %v", stored, err, tc.errno)
				}
				return
			}
			if err != nil || !strings.HasPrefix(stored, XattrStorePrefix) || len(stored) > 255 {
				t.Fatalf("EncryptXattrName = %q, %v", stored, err)
			}
			if plain, err := n.DecryptXattrName(stored); err != nil || plain != tc.plain {
				t.Fatalf("DecryptXattrName = %q, %v", plain, err)
			}
		})
	}
	for _, bad := range []string{"user.foo", "user.gocryptfs.", "user.gocryptfs.!!", "security.gocryptfs.NsQ6u5I_H6dlnqDX-QmS_A",
		XattrStorePrefix + n.encrypt("x", katDirIV)} {
		if p, err := n.DecryptXattrName(bad); !errors.Is(err, ErrBadCipherName) {
			t.Errorf("DecryptXattrName(%q) = %q, %v; want ErrBadCipherName", bad, p, err)
		}
	}
}
