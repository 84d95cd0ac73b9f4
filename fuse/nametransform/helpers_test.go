package nametransform

import (
	"bytes"
	"os"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/fuse/cryptocore"
)

// katMaster is the master key 01 02 … 20 used for the known answers that
// were produced by gocryptfs 2.3 (see kat_test.go).
func katMaster() []byte {
	b := make([]byte, cryptocore.KeyLen)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}

// katDirIV is the gocryptfs.diriv written into the known-answer cipher
// directory before gocryptfs mounted it.
var katDirIV = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

func newNT(tb testing.TB, master []byte) *NameTransform {
	tb.Helper()
	k, err := secret.FromBytes(bytes.Clone(master))
	if err != nil {
		tb.Fatal(err)
	}
	defer k.Wipe()
	cc, err := cryptocore.New(k)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cc.Wipe)
	return New(cc.NameBlock())
}

// openDir returns an fd for a fresh temporary directory.
func openDir(t *testing.T) (int, string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd()), dir
}
