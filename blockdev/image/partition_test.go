package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestPartDevice checks that a partition seen as a device never reads
// or writes outside it.
func TestPartDevice(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	disk := bytes.Repeat([]byte("abcdefgh"), 8)
	f.Write(disk)
	d := &partDevice{f: f, off: 8, size: 16}
	tests := []struct {
		name    string
		off     int64
		n       int
		want    string
		wantErr error
	}{
		{"inside", 0, 8, "abcdefgh", nil},
		{"to the end", 8, 8, "abcdefgh", nil},
		{"past the end", 12, 8, "efgh", io.EOF},
		{"at the end", 16, 4, "", io.EOF},
		{"negative", -1, 4, "", io.EOF},
	}
	for _, tt := range tests {
		b := make([]byte, tt.n)
		n, err := d.ReadAt(b, tt.off)
		if string(b[:n]) != tt.want || err != tt.wantErr {
			t.Errorf("%s: ReadAt gave %q, %v; want %q, %v", tt.name, b[:n], err, tt.want, tt.wantErr)
		}
	}
	if _, err := d.WriteAt([]byte("XXXX"), 14); err == nil {
		t.Error("a write across the partition's end was not refused")
	}
	if _, err := d.WriteAt([]byte("XXXX"), 12); err != nil {
		t.Fatal(err)
	}
	if end, _ := d.Seek(0, io.SeekEnd); end != 16 {
		t.Errorf("Seek to the end gave %d", end)
	}
	got := make([]byte, len(disk))
	f.ReadAt(got, 0)
	want := bytes.Clone(disk)
	copy(want[20:], "XXXX")
	if !bytes.Equal(got, want) {
		t.Errorf("disk after a write: %q", got)
	}
}
