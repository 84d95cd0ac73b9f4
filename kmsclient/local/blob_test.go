package local

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"kmsagent/agent/uuid"
	"kmsagent/kmsclient"
)

func TestParseBlob(t *testing.T) {
	valid := appendBlobHeader(nil, uuid.New(), 3)
	valid = append(valid, make([]byte, nonceSize+32+tagSize)...)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"valid", valid, true},
		{"empty", nil, false},
		{"short", valid[:blobMinSize-1], false},
		{"huge", make([]byte, blobMaxSize+1), false},
		{"version", append([]byte{2}, valid[1:]...), false},
		{"key-version-0", func() []byte { b := append([]byte(nil), valid...); b[17], b[18], b[19], b[20] = 0, 0, 0, 0; return b }(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := parseBlob(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil && b.keyVersion != 3 {
				t.Fatalf("version %d", b.keyVersion)
			}
		})
	}
}

// FuzzDecrypt feeds arbitrary wrapped keys to Decrypt: it must never panic
// and every failure must be an invalid-ciphertext error.
func FuzzDecrypt(f *testing.F) {
	s, err := Open(filepath.Join(f.TempDir(), "kms"))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	info, err := s.CreateKey(ctx, "fuzz", "")
	if err != nil {
		f.Fatal(err)
	}
	dk, err := s.GenerateDataKey(ctx, info.ID, 32, "vol")
	if err != nil {
		f.Fatal(err)
	}
	dk.Wipe()
	f.Add(dk.Wrapped, "vol")
	f.Add([]byte{1}, "vol")
	f.Add(make([]byte, 60), "x")
	f.Fuzz(func(t *testing.T, wrapped []byte, binding string) {
		if binding == "" {
			binding = "b"
		}
		k, err := s.Decrypt(ctx, info.ID, wrapped, binding)
		if err == nil {
			k.Wipe()
			if binding != "vol" {
				t.Fatalf("decrypted with binding %q", binding)
			}
			return
		}
		if !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
