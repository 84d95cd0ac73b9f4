package cryptkey

import (
	"errors"
	"strings"
	"testing"
)

func TestVolumeFromPeer(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"@5a1b2c3d4e5f6071/cryptsetup/data", "data"},
		{"@0/cryptsetup/luks-0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f", "luks-0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"},
		{"@ffffffffffffffff/cryptsetup/a b", "a b"},
		{"@ab/cryptsetup/café", "café"},
		{"", ""},
		{"@", ""},
		{"/run/x.sock", ""},                     // a path, not abstract
		{"@00001", ""},                          // autobind
		{"@/cryptsetup/data", ""},               // no random part
		{"@xyz/cryptsetup/data", ""},            // not hex
		{"@AB/cryptsetup/data", ""},             // upper case: not what systemd writes
		{"@10000000000000000/cryptsetup/d", ""}, // more than 64 bits
		{"@ab/cryptsetup/", ""},
		{"@ab/cryptsetup/.", ""},
		{"@ab/cryptsetup/a/b", ""},
		{"@ab/cryptsetup/a\nb", ""},
		{"@ab/unit/foo.service/cred", ""},
		{"@ab/cryptsetup/" + strings.Repeat("x", 104), ""}, // longer than sun_path
	}
	for _, tt := range tests {
		got, err := VolumeFromPeer(tt.addr)
		if tt.want == "" {
			if err == nil || !errors.Is(err, ErrNotCryptsetup) {
				t.Errorf("VolumeFromPeer(%q) = %q, %v; want ErrNotCryptsetup", tt.addr, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("VolumeFromPeer(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

// FuzzVolumeFromPeer: any name accepted is one systemd-cryptsetup would
// accept and one line of log text.
func FuzzVolumeFromPeer(f *testing.F) {
	for _, s := range []string{"@5a1b2c3d4e5f6071/cryptsetup/data", "@ab/cryptsetup/..", "@ab/unit/x/y", "@ab/cryptsetup/a\x00b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		name, err := VolumeFromPeer(addr)
		if err != nil {
			return
		}
		if checkName(name) != nil || !strings.HasSuffix(addr, "/cryptsetup/"+name) {
			t.Fatalf("VolumeFromPeer(%q) accepted %q", addr, name)
		}
	})
}
