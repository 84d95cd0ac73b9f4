package crypt

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/luks2"
)

func TestCryptTarget(t *testing.T) {
	backing := unix.Mkdev(254, 16)
	seg4k := luks2.SegmentInfo{Offset: 16 << 20, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 4096}
	cases := []struct {
		name    string
		seg     luks2.SegmentInfo
		size    int64
		o       TableOptions
		want    string
		wantLen uint64
		err     string
	}{
		{"4k dynamic", seg4k, 40 << 20, TableOptions{},
			"aes-xts-plain64 :64:logon:kmsagent:v 0 254:16 32768 1 sector_size:4096", 49152, ""},
		{"4k discards, odd tail dropped", seg4k, 40<<20 + 1536, TableOptions{AllowDiscards: true},
			"aes-xts-plain64 :64:logon:kmsagent:v 0 254:16 32768 2 allow_discards sector_size:4096", 49152, ""},
		{"512 fixed with tweak", luks2.SegmentInfo{Offset: 4096, Size: 8192, IVTweak: 7, Encryption: "aes-xts-plain64", SectorSize: 512}, 1 << 20, TableOptions{},
			"aes-xts-plain64 :64:logon:kmsagent:v 7 254:16 8", 16, ""},
		{"segment past the end", luks2.SegmentInfo{Offset: 4096, Size: 1 << 20, Encryption: "aes-xts-plain64", SectorSize: 512}, 1 << 19, TableOptions{}, "", 0, "past the end"},
		{"device smaller than offset", seg4k, 1 << 20, TableOptions{}, "", 0, "ends before"},
		{"integrity", luks2.SegmentInfo{Offset: 4096, Dynamic: true, Encryption: "aes-gcm-random", Integrity: "aead", SectorSize: 512}, 1 << 20, TableOptions{}, "", 0, "integrity"},
		// The header is on the device: data must start after it.
		{"offset 0", luks2.SegmentInfo{Offset: 0, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 512}, 40 << 20, TableOptions{}, "", 0, "overlaps the LUKS2 header"},
		{"inside the keyslot area", luks2.SegmentInfo{Offset: 1 << 20, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 512, MetadataEnd: 16 << 20}, 40 << 20, TableOptions{}, "", 0, "overlaps the LUKS2 header"},
		{"right after the keyslot area", luks2.SegmentInfo{Offset: 16 << 20, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 4096, MetadataEnd: 16 << 20}, 40 << 20, TableOptions{},
			"aes-xts-plain64 :64:logon:kmsagent:v 0 254:16 32768 1 sector_size:4096", 49152, ""},
		// Offsets and sizes of 2^63 and more, and sums that wrap.
		{"size 2^63", luks2.SegmentInfo{Offset: 16 << 20, Size: 1 << 63, Encryption: "aes-xts-plain64", SectorSize: 512}, 40 << 20, TableOptions{}, "", 0, "past the end"},
		{"offset + size wraps", luks2.SegmentInfo{Offset: 16 << 20, Size: 1<<64 - 8<<20, Encryption: "aes-xts-plain64", SectorSize: 512}, 40 << 20, TableOptions{}, "", 0, "past the end"},
		{"offset 2^63", luks2.SegmentInfo{Offset: 1 << 63, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 512}, 40 << 20, TableOptions{}, "", 0, "ends before"},
		{"offset 2^64-512", luks2.SegmentInfo{Offset: 1<<64 - 512, Size: 512, Encryption: "aes-xts-plain64", SectorSize: 512}, 40 << 20, TableOptions{}, "", 0, "ends before"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg, err := CryptTarget(c.seg, c.size, backing, "v", 64, c.o)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tg.Params != c.want || tg.Length != c.wantLen {
				t.Fatalf("got %d %q\nwant %d %q", tg.Length, tg.Params, c.wantLen, c.want)
			}
		})
	}
}

func TestParseMountOptions(t *testing.T) {
	cases := []struct {
		opts     string
		ro       bool
		flags    uintptr
		data     string
		failWith string
	}{
		{"", false, 0, "", ""},
		{"noatime,nodev,errors=remount-ro", false, unix.MS_NOATIME | unix.MS_NODEV, "errors=remount-ro", ""},
		{"rw", true, unix.MS_RDONLY, "", ""},
		{"ro,rw", false, 0, "", ""},
		{"a b", false, 0, "", "blank"},
	}
	for _, c := range cases {
		flags, data, err := ParseMountOptions(c.opts, c.ro)
		if c.failWith != "" {
			if err == nil || !strings.Contains(err.Error(), c.failWith) {
				t.Errorf("%q: err %v", c.opts, err)
			}
			continue
		}
		if err != nil || flags != c.flags || data != c.data {
			t.Errorf("%q: %#x %q %v", c.opts, flags, data, err)
		}
	}
}

func TestDefaultName(t *testing.T) {
	if got := DefaultName("3F2B8C1E-6d4a-4e2f-9b7c-1a2b3c4d5e6f"); got != "kmsagent-3f2b8c1e" {
		t.Fatal(got)
	}
	if got := luksUUIDOf("CRYPT-LUKS2-3f2b8c1e6d4a4e2f9b7c1a2b3c4d5e6f-x-y"); got != "3f2b8c1e-6d4a-4e2f-9b7c-1a2b3c4d5e6f" {
		t.Fatal(got)
	}
}
