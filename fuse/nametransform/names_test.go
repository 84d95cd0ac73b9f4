package nametransform

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestEncryptNameRefuses(t *testing.T) {
	n := newNT(t, katMaster())
	for _, tc := range []struct {
		name  string
		plain string
		want  error
		errno syscall.Errno
	}{
		{"empty", "", ErrInvalidName, syscall.EINVAL},
		{"dot", ".", ErrInvalidName, syscall.EINVAL},
		{"dotdot", "..", ErrInvalidName, syscall.EINVAL},
		{"slash", "a/b", ErrInvalidName, syscall.EINVAL},
		{"only slash", "/", ErrInvalidName, syscall.EINVAL},
		{"nul", "a\x00b", ErrInvalidName, syscall.EINVAL},
		{"256 bytes", strings.Repeat("a", 256), ErrNameTooLong, syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []func(string, []byte) (string, error){n.EncryptName, n.EncryptAndHashName} {
				_, err := f(tc.plain, katDirIV)
				if !errors.Is(err, tc.want) || !errors.Is(err, tc.errno) {
					t.Errorf("err = %v, want %v (%v)", err, tc.want, tc.errno)
				}
			}
		})
	}
}

func TestBadDirIV(t *testing.T) {
	n := newNT(t, katMaster())
	for _, iv := range [][]byte{nil, make([]byte, 15), make([]byte, 17)} {
		if _, err := n.EncryptName("a", iv); err == nil {
			t.Errorf("EncryptName with %d-byte IV succeeded", len(iv))
		}
		if _, err := n.DecryptName("cd1qMZI4DGrT7ZL-wOrKiA", iv); err == nil {
			t.Errorf("DecryptName with %d-byte IV succeeded", len(iv))
		}
	}
}

func TestRoundTripLengths(t *testing.T) {
	n := newNT(t, katMaster())
	for l := 1; l <= NameMax; l++ {
		plain := strings.Repeat("é", l/2) + strings.Repeat("z", l%2)
		c, err := n.EncryptName(plain, katDirIV)
		if err != nil {
			t.Fatalf("len %d: %v", l, err)
		}
		// 1..15 bytes → one block → 22 chars; 255 → 256 bytes → 342 chars.
		if want := raw64.EncodedLen((l/16 + 1) * 16); len(c) != want {
			t.Fatalf("len %d: cipher name has %d chars, want %d", l, len(c), want)
		}
		hashed, err := n.EncryptAndHashName(plain, katDirIV)
		if err != nil {
			t.Fatal(err)
		}
		if long := len(c) > NameMax; long != (hashed != c) || long && hashed != HashLongName(c) {
			t.Fatalf("len %d: hashed %q for cipher name of %d chars", l, hashed, len(c))
		}
		got, err := n.DecryptName(c, katDirIV)
		if err != nil || got != plain {
			t.Fatalf("len %d: DecryptName = %q, %v", l, got, err)
		}
	}
}

func TestLongNameThreshold(t *testing.T) {
	// gocryptfs's help text: names longer than 175 bytes go to extra files.
	n := newNT(t, katMaster())
	for _, tc := range []struct {
		len  int
		long bool
	}{{175, false}, {176, true}} {
		h, err := n.EncryptAndHashName(strings.Repeat("q", tc.len), katDirIV)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.HasPrefix(h, LongNamePrefix); got != tc.long {
			t.Errorf("%d bytes: long = %v, want %v", tc.len, got, tc.long)
		}
	}
}

func TestDirIVChangesName(t *testing.T) {
	n := newNT(t, katMaster())
	other := bytes.Clone(katDirIV)
	other[15] ^= 1
	a, _ := n.EncryptName("same", katDirIV)
	b, _ := n.EncryptName("same", other)
	if a == b {
		t.Fatal("different directory IVs give the same cipher name")
	}
	if _, err := n.DecryptName(a, other); !errors.Is(err, ErrBadCipherName) {
		t.Fatalf("decrypt under the wrong IV: err = %v", err)
	}
}

func TestDecryptNameRejects(t *testing.T) {
	n := newNT(t, katMaster())
	valid := "cd1qMZI4DGrT7ZL-wOrKiA" // "hello.txt"
	// The last character of a 22-char name carries 4 unused bits; a
	// non-zero value there is a second spelling of the same bytes.
	alias := valid[:21] + "B"
	for _, tc := range []struct {
		name, cName string
	}{
		{"empty", ""},
		{"not base64", "hello world"},
		{"std alphabet", "cd1qMZI4DGrT7ZL+wOrKiA"},
		{"padded", valid + "=="},
		{"non-canonical", alias},
		{"embedded newline", valid[:10] + "\n" + valid[10:]},
		{"trailing CR", valid + "\r"},
		{"8 bytes", "AAAAAAAAAAA"},
		{"17 bytes", strings.Repeat("A", raw64.EncodedLen(17))},
		{"over 256 bytes", strings.Repeat("A", raw64.EncodedLen(272))},
		{"huge", strings.Repeat("A", 1<<20)},
		{"diriv", DirIVFilename},
		{"long name", katLongHashed},
		{"wrong key", func() string { c, _ := newNT(t, bytes.Repeat([]byte{9}, 32)).EncryptName("x", katDirIV); return c }()},
		{"decrypts to dot", n.encrypt(".", katDirIV)},
		{"decrypts to dotdot", n.encrypt("..", katDirIV)},
		{"decrypts to slash", n.encrypt("a/b", katDirIV)},
		{"decrypts to nul", n.encrypt("a\x00", katDirIV)},
		{"decrypts to padding only", raw64.EncodeToString(n.eme.Encrypt(katDirIV, bytes.Repeat([]byte{16}, 16)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := n.DecryptName(tc.cName, katDirIV)
			if !errors.Is(err, ErrBadCipherName) || !errors.Is(err, syscall.EBADMSG) {
				t.Fatalf("DecryptName = %q, %v; want ErrBadCipherName", p, err)
			}
		})
	}
}

func TestUnpad16(t *testing.T) {
	block := func(tail ...byte) []byte { return append(bytes.Repeat([]byte{'a'}, 16-len(tail)), tail...) }
	for _, tc := range []struct {
		name string
		in   []byte
		want string // "" means error
	}{
		{"one byte pad", block(1), strings.Repeat("a", 15)},
		{"15 byte pad", append([]byte{'a'}, bytes.Repeat([]byte{15}, 15)...), "a"},
		{"full block pad", append(block(1), bytes.Repeat([]byte{16}, 16)...), strings.Repeat("a", 15) + "\x01"},
		{"zero pad byte", block(0), ""},
		{"pad 17", block(17), ""},
		{"only padding", bytes.Repeat([]byte{16}, 16), ""},
		{"inconsistent", block(3, 2, 3), ""},
		{"empty", nil, ""},
		{"unaligned", []byte{1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := unpad16(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("unpad16 = %q, want error", got)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("unpad16 = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestNameType(t *testing.T) {
	hash := HashLongName("whatever")
	for _, tc := range []struct {
		name string
		want int
	}{
		{"cd1qMZI4DGrT7ZL-wOrKiA", NameRegular},
		{"A", NameRegular},
		{hash, NameLongContent},
		{hash + LongNameSuffix, NameLongFile},
		{DirIVFilename, NameDirIV},
		{"gocryptfs.conf", NameOther},
		{"kmsagent.json", NameOther},
		{"lost+found", NameOther},
		{"", NameOther},
		{LongNamePrefix, NameOther},
		{LongNamePrefix + "short", NameOther},
		{LongNamePrefix + "short" + LongNameSuffix, NameOther},
		{hash + ".tmp", NameOther},
		{hash + LongNameSuffix + LongNameSuffix, NameOther},
		{"has space", NameOther},
	} {
		if got := NameType(tc.name); got != tc.want {
			t.Errorf("NameType(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func FuzzDecryptName(f *testing.F) {
	for _, tc := range katNames {
		f.Add(tc.cipher)
	}
	f.Add(katLongCipher)
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAA")
	f.Add(DirIVFilename)
	n := newNT(f, katMaster())
	f.Fuzz(func(t *testing.T, cName string) {
		plain, err := n.DecryptName(cName, katDirIV)
		if err != nil {
			if !errors.Is(err, ErrBadCipherName) {
				t.Fatalf("error does not wrap ErrBadCipherName: %v", err)
			}
			return
		}
		if checkName(plain) != nil {
			t.Fatalf("decrypted to invalid name %q", plain)
		}
		// Strict decoding makes the mapping one-to-one.
		if back, err := n.EncryptName(plain, katDirIV); err != nil || back != cName {
			t.Fatalf("%q decrypts to %q which encrypts to %q, %v", cName, plain, back, err)
		}
	})
}

func BenchmarkEncryptName(b *testing.B) {
	n := newNT(b, katMaster())
	for b.Loop() {
		if _, err := n.EncryptName("some-file-name.txt", katDirIV); err != nil {
			b.Fatal(err)
		}
	}
}
