package cryptfs

import (
	"bytes"
	"os"
	"testing"
)

func TestSmoke(t *testing.T) {
	m, _ := newFS(t)
	data := bytes.Repeat([]byte("hello world "), 1000)
	if err := os.WriteFile(m.path("a.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(m.path("a.txt"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, %d bytes", err, len(got))
	}
	if err := os.MkdirAll(m.path("d1/d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Log(e.Name())
	}
	st, _ := os.Stat(m.path("a.txt"))
	t.Log(st.Size(), st.Mode())
	t.Log(cipherFiles(t, m.cipher))
	t.Log(m.logs.String())
}
