package luks2

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// Keys and passphrases from the README of cryptsetup's test images.
const (
	compatVK    = "d47ee2cdc40f39be9a3e8d72a149cc4d"
	mdaVK       = "b67647946b62ded9d65983a92cd2c0f4c08923473deb44741da5ba675e8bde82"
	mdaPass     = "Qx3qn46vq0v"
	wrongPass   = "rUkL4RUryBom"
	compatPass0 = "compatkey"
	compatPass1 = "0123456789abcdef"
)

func TestCompatImage2(t *testing.T) {
	f := openFile(t, unxz(t, "compatimage2.img.xz"))
	h := readHeader(t, f)
	if w := h.Warnings(); len(w) != 0 {
		t.Errorf("warnings on a clean image: %q", w)
	}
	if got, want := h.UUID(), "28632274-8c8a-493f-835b-da802e1c576b"; got != want {
		t.Errorf("UUID = %q, want %q", got, want)
	}
	seg, err := h.Segment()
	if err != nil {
		t.Fatal(err)
	}
	if seg.Offset != 4<<20 || !seg.Dynamic || seg.Encryption != "aes-cbc-essiv:sha256" || seg.SectorSize != 512 || seg.KeySize != 16 {
		t.Errorf("segment = %+v", seg)
	}
	want := hexKey(t, compatVK)
	tests := []struct {
		slot int
		pass string
		err  error
	}{
		{0, compatPass0, nil},
		{1, compatPass1, nil},
		{0, compatPass1, ErrWrongPassphrase},
		{1, wrongPass, ErrWrongPassphrase},
		{2, compatPass0, ErrNoSuchKeyslot},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("slot%d/%s", tc.slot, tc.pass), func(t *testing.T) {
			vk, err := h.OpenKeyslot(f, tc.slot, []byte(tc.pass))
			if !errors.Is(err, tc.err) {
				t.Fatalf("OpenKeyslot: err = %v, want %v", err, tc.err)
			}
			if err == nil {
				defer vk.Wipe()
				if !vk.Equal(want) {
					t.Errorf("volume key = %x, want %s", vk.Bytes(), compatVK)
				}
			}
		})
	}
	vk, slot, err := h.OpenAny(f, []byte(compatPass1))
	if err != nil || slot != 1 || !vk.Equal(want) {
		t.Errorf("OpenAny = slot %d, %v", slot, err)
	}
	if _, err := h.VerifyVolumeKey(want); err != nil {
		t.Errorf("VerifyVolumeKey: %v", err)
	}
}

func TestMetadataSizes(t *testing.T) {
	dir := untarxz(t, "luks2_mda_images.tar.xz")
	want := hexKey(t, mdaVK)
	for _, kib := range []int{16, 32, 64, 128, 256, 512, 1024, 2048, 4096} {
		t.Run(fmt.Sprint(kib), func(t *testing.T) {
			f := openFile(t, filepath.Join(dir, fmt.Sprintf("test_image_%d", kib)))
			h := readHeader(t, f)
			if got := h.MetadataSize(); got != uint64(kib)<<10 {
				t.Errorf("MetadataSize = %d, want %d", got, kib<<10)
			}
			vk, slot, err := h.OpenAny(f, []byte(mdaPass))
			if err != nil {
				t.Fatalf("OpenAny: %v", err)
			}
			defer vk.Wipe()
			if !vk.Equal(want) {
				t.Errorf("slot %d volume key = %x, want %s", slot, vk.Bytes(), mdaVK)
			}
			if _, _, err := h.OpenAny(f, []byte(wrongPass)); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("wrong passphrase: err = %v", err)
			}
		})
	}
}

func TestValidHeaderImage(t *testing.T) {
	f := openFile(t, unxz(t, "luks2_valid_hdr.img.xz"))
	h := readHeader(t, f)
	if len(h.Warnings()) != 0 {
		t.Errorf("warnings: %q", h.Warnings())
	}
	if _, err := h.Segment(); err != nil {
		t.Errorf("Segment: %v", err)
	}
	if len(h.Keyslots()) == 0 {
		t.Errorf("no keyslots")
	}
}
