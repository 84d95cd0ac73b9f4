package luks2

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// unboundPass is the passphrase of the unbound keyslot of cryptsetup's
// test image luks2_keyslot_unassigned.img; the image made here has the
// same shape.
const unboundPass = "93R4P4pIqAH8"

// cryptsetupUnbound makes an image with cryptsetup: keyslot 0 holds the
// volume key under boundPass, keyslot 1 an unbound key of its own
// (luksAddKey --unbound) under unboundPass.
func cryptsetupUnbound(t *testing.T, boundPass string) string {
	t.Helper()
	tstest.NeedCryptsetup(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "unbound.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 17<<20); err != nil {
		t.Fatal(err)
	}
	p0 := writeFile(t, dir, "p0", []byte(boundPass))
	p1 := writeFile(t, dir, "p1", []byte(unboundPass))
	tstest.LuksFormat(t, path, p0)
	tstest.LuksAddUnbound(t, path, p1)
	return path
}

func TestUnboundKeyslot(t *testing.T) {
	path := cryptsetupUnbound(t, "bound")
	f := openFile(t, path)
	h := readHeader(t, f)
	ks := h.Keyslots()
	if len(ks) != 2 || !ks[0].Bound || ks[1].Bound || ks[1].Digest < 0 {
		t.Fatalf("keyslots %+v: want 0 bound, 1 unbound with a digest", ks)
	}

	// The unbound keyslot is never taken for the volume key.
	if _, err := h.OpenKeyslot(f, 1, []byte(unboundPass)); !errors.Is(err, ErrUnboundKeyslot) {
		t.Errorf("OpenKeyslot(1) of the unbound keyslot: err = %v, want ErrUnboundKeyslot", err)
	}
	_, slot, err := h.OpenAny(f, []byte(unboundPass))
	if !errors.Is(err, ErrUnboundKeyslot) || !errors.Is(err, ErrWrongPassphrase) || !strings.Contains(err.Error(), "keyslot 1") {
		t.Errorf("OpenAny with the unbound passphrase: slot %d, err = %v; want ErrUnboundKeyslot naming keyslot 1", slot, err)
	}
	if _, _, err := h.OpenAny(f, []byte("neither")); !errors.Is(err, ErrWrongPassphrase) || errors.Is(err, ErrUnboundKeyslot) {
		t.Errorf("OpenAny with a wrong passphrase: %v", err)
	}
	// cryptsetup agrees: the unbound passphrase opens nothing.
	cryptsetupFails(t, "open", "--test-passphrase", "--key-file", writeFile(t, t.TempDir(), "p", []byte(unboundPass)), path)

	vk, slot, err := h.OpenAny(f, []byte("bound"))
	if err != nil || slot != 0 {
		t.Fatalf("OpenAny with the bound passphrase: slot %d, %v", slot, err)
	}
	defer vk.Wipe()
	out := tstest.MustCryptsetup(t, "luksDump", "--dump-volume-key", "--key-file", writeFile(t, t.TempDir(), "p", []byte("bound")), path)
	if want := hex.EncodeToString(vk.Bytes()); !strings.Contains(strings.Join(strings.Fields(out), ""), want) {
		t.Errorf("volume key %s is not the one cryptsetup dumps:\n%s", want, out)
	}
}

// TestReencryptionRefused: headers in the middle of an online
// reencryption, made by cryptsetup reencrypt --init-only, are read (as
// cryptsetup reads them) but not opened: the data is partly in the old
// layout and partly in the new.
func TestReencryptionRefused(t *testing.T) {
	tstest.NeedCryptsetup(t)
	fast := []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	for _, tc := range []struct {
		name  string
		setup [][]string // cryptsetup commands, with the image and key file appended
	}{
		{"new key", [][]string{{"luksFormat", "--type", "luks2"}, {"reencrypt", "--init-only"}}},
		// Encryption in place moves the data: a linear segment at offset 0.
		{"encrypt with data shift", [][]string{{"reencrypt", "--encrypt", "--init-only", "--type", "luks2", "--reduce-device-size", "32M"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "reencrypt.img")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 40<<20); err != nil {
				t.Fatal(err)
			}
			pass := writeFile(t, dir, "pass", []byte("old key"))
			for _, args := range tc.setup {
				tstest.MustCryptsetup(t, append(append(args, fast...), "--key-file", pass, path)...)
			}
			f := openFile(t, path)
			h := readHeader(t, f)
			var types []string
			for _, ks := range h.Keyslots() {
				types = append(types, ks.Type)
			}
			if !slices.Contains(types, "reencrypt") {
				t.Fatalf("keyslot types %v, want a reencrypt keyslot", types)
			}
			const want = "a reencryption is in progress"
			if _, _, err := h.OpenAny(f, []byte("old key")); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want) {
				t.Errorf("OpenAny: %v, want ErrUnsupported with %q", err, want)
			}
			if _, err := h.OpenKeyslot(f, 0, []byte("old key")); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want) {
				t.Errorf("OpenKeyslot: %v, want ErrUnsupported with %q", err, want)
			}
			if _, err := h.Segment(); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want) {
				t.Errorf("Segment: %v, want ErrUnsupported with %q", err, want)
			}
			if err := h.CheckAttached(); err != nil {
				t.Errorf("CheckAttached: %v; a reencryption's segments follow its own rules", err)
			}
		})
	}
}
