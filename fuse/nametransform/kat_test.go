package nametransform

import (
	"strings"
	"testing"
)

// Known answers from gocryptfs 2.3 (Debian): a cipher directory with
// katDirIV as its gocryptfs.diriv, mounted with -masterkey set to katMaster,
// in which the names below were created. Name encryption is deterministic,
// so our output must match byte for byte.
var katNames = []struct {
	plain, cipher string
}{
	{"hello.txt", "cd1qMZI4DGrT7ZL-wOrKiA"},
	{"link", "lZmGsUpKcvNOHVKsZH3R7w"},
}

// A 180-byte name: its cipher name is 256 characters, so it is stored
// hashed, with the full cipher name in the .name file.
var katLongPlain = strings.Repeat("x", 180)

const (
	katLongHashed = "gocryptfs.longname.v3PMuAcF4A9VJL6RN4FJd35DYpTwpaL_tmh1JdDa8J4"
	katLongCipher = "RjFZYyszXmlPurNYn3JDfSHza5PhFe7SOaquSIsQmenbwXWkKBYzuqc-BwfxXqU9zUfbMaiibMe5TKpyNJ09s8OZBRtN1pH2HZcgbaVYBS2s_fp8nlDyeHUcmgE46ZeQWg_ELhLjG-OujtjBPU3ZdSWJJ4mDzMsWyKVzfWH-HPP6S-WG1tD7WHMglXQYX1Zx4QlI9Ewv9OoUmtyb2R7aVMJ7FW7Qn_TmUyR8fuB_nPvA9BjrRilbtYxZU1-FOp55"
)

// user.kat on hello.txt.
const (
	katXattrPlain  = "user.kat"
	katXattrStored = "user.gocryptfs.NsQ6u5I_H6dlnqDX-QmS_A"
)

func TestKnownAnswerNames(t *testing.T) {
	n := newNT(t, katMaster())
	for _, tc := range katNames {
		t.Run(tc.plain, func(t *testing.T) {
			got, err := n.EncryptAndHashName(tc.plain, katDirIV)
			if err != nil || got != tc.cipher {
				t.Fatalf("EncryptAndHashName = %q, %v; want %q", got, err, tc.cipher)
			}
			plain, err := n.DecryptName(tc.cipher, katDirIV)
			if err != nil || plain != tc.plain {
				t.Fatalf("DecryptName = %q, %v; want %q", plain, err, tc.plain)
			}
		})
	}
}

func TestKnownAnswerLongName(t *testing.T) {
	n := newNT(t, katMaster())
	full, err := n.EncryptName(katLongPlain, katDirIV)
	if err != nil || full != katLongCipher {
		t.Fatalf("EncryptName = %q, %v; want %q", full, err, katLongCipher)
	}
	if h := HashLongName(full); h != katLongHashed {
		t.Fatalf("HashLongName = %q, want %q", h, katLongHashed)
	}
	if h, err := n.EncryptAndHashName(katLongPlain, katDirIV); err != nil || h != katLongHashed {
		t.Fatalf("EncryptAndHashName = %q, %v; want %q", h, err, katLongHashed)
	}
	if p, err := n.DecryptName(katLongCipher, katDirIV); err != nil || p != katLongPlain {
		t.Fatalf("DecryptName = %q, %v", p, err)
	}
	if NameType(katLongHashed) != NameLongContent || NameType(katLongHashed+LongNameSuffix) != NameLongFile {
		t.Fatal("NameType misclassifies the known long name")
	}
}

func TestKnownAnswerXattrName(t *testing.T) {
	n := newNT(t, katMaster())
	got, err := n.EncryptXattrName(katXattrPlain)
	if err != nil || got != katXattrStored {
		t.Fatalf("EncryptXattrName = %q, %v; want %q", got, err, katXattrStored)
	}
	plain, err := n.DecryptXattrName(katXattrStored)
	if err != nil || plain != katXattrPlain {
		t.Fatalf("DecryptXattrName = %q, %v", plain, err)
	}
}
