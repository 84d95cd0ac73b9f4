package contentenc

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// Known answers written by gocryptfs 2.3 (Debian) mounted with
// -masterkey=0102…20: the cipher file of hello.txt ("hello, world\n"),
// the stored value of its xattr user.kat ("xattr value"), and the cipher
// symlink target of a symlink to "../target/file".
const (
	katFile        = "00023d6c73d1e184df25d4555476753b9499d0c420643b0b3da4a31d7eb10fb6ec00dec25f4abcb09384d619252355d036dda25e1810e30916e0c5d976ddbe"
	katFilePlain   = "hello, world\n"
	katXattr       = "302084225eae1559e05195ec4115d30abccd581ca3a54242f0ecaa1e867775481e4745673217a658be2534"
	katXattrPlain  = "xattr value"
	katSymlink     = "iRKOD6SpZpdWRhbhvLp1sIAz7lOnTRvdJMRrJMI6LWnK6MxPWW3EgP6ppnC1Tw"
	katSymlinkDest = "../target/file"
)

func TestKnownAnswerFile(t *testing.T) {
	c := newCE(t, katMaster())
	file, _ := hex.DecodeString(katFile)
	if n, err := PlainSize(uint64(len(file))); err != nil || n != uint64(len(katFilePlain)) {
		t.Fatalf("PlainSize(%d) = %d, %v", len(file), n, err)
	}
	h, err := ParseHeader(file[:HeaderLen])
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.DecryptBlocks(bytes.Clone(file[HeaderLen:]), 0, h.ID[:])
	if err != nil || string(plain) != katFilePlain {
		t.Fatalf("DecryptBlocks = %q, %v", plain, err)
	}
	// The same block under another block number or file ID must fail.
	if _, err := c.DecryptBlock(nil, file[HeaderLen:], 1, h.ID[:]); err == nil {
		t.Fatal("block decrypted under block number 1")
	}
	if _, err := c.DecryptBlock(nil, file[HeaderLen:], 0, nil); err == nil {
		t.Fatal("block decrypted without its file ID")
	}
}

func TestKnownAnswerXattrValue(t *testing.T) {
	c := newCE(t, katMaster())
	v, _ := hex.DecodeString(katXattr)
	got, err := c.DecryptXattrValue(v)
	if err != nil || string(got) != katXattrPlain {
		t.Fatalf("DecryptXattrValue = %q, %v", got, err)
	}
}

func TestKnownAnswerSymlink(t *testing.T) {
	c := newCE(t, katMaster())
	got, err := c.DecryptSymlinkTarget(katSymlink)
	if err != nil || got != katSymlinkDest {
		t.Fatalf("DecryptSymlinkTarget = %q, %v", got, err)
	}
}
