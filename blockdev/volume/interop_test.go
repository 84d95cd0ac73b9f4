package volume

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/token"
)

// These tests hold our headers against cryptsetup itself, on image files
// only (no root, no device-mapper).

func TestCryptsetupAcceptsFormat(t *testing.T) {
	tstest.NeedCryptsetup(t)
	k := newKMS(t)
	for _, sector := range []int{512, 4096} {
		path, f := newFile(t, imageSize)
		recovery := "break glass\n"
		res, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{
			KeyID: k.key, SectorSize: sector, RecoveryPassphrase: []byte(recovery), RecoveryKDF: fastArgon2id,
		}})
		if err != nil {
			t.Fatal(err)
		}
		dump := tstest.MustCryptsetup(t, "luksDump", path)
		for _, want := range []string{"UUID:          \t" + res.UUID, "sector: " + itoa(sector), "0: kmsagent", "PBKDF:      pbkdf2", "PBKDF:      argon2id"} {
			if !strings.Contains(dump, want) {
				t.Fatalf("luksDump lacks %q:\n%s", want, dump)
			}
		}
		// The recovery passphrase opens with stock cryptsetup.
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-slot", "1", "--key-file", writePass(t, recovery), path)
		if _, err := tstest.Cryptsetup(t, "open", "--test-passphrase", "--key-file", writePass(t, "break glass"), path); err == nil {
			t.Fatal("cryptsetup accepted a wrong passphrase")
		}
		// So does the exported volume key.
		vk, err := ExportKey(ctx, f, k.store, nil)
		if err != nil {
			t.Fatal(err)
		}
		vkFile := writePass(t, string(vk.Bytes()))
		vk.Wipe()
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--volume-key-file", vkFile, path)
		// And the KMS data key, as base64 text, opens the token's keyslot.
		h, _ := ReadHeader(f)
		raw, _ := h.Token(res.TokenID)
		tok, _ := token.Parse(raw)
		dk, err := k.store.Decrypt(ctx, tok.KMS.KeyID, tok.WrappedKey, tok.Binding)
		if err != nil {
			t.Fatal(err)
		}
		pass, _ := token.Passphrase(dk)
		dk.Wipe()
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-slot", "0", "--key-file", writePass(t, string(pass.Bytes())), path)
		pass.Wipe()
		// token export returns our token as stored.
		exported := tstest.MustCryptsetup(t, "token", "export", "--token-id", "0", path)
		if !jsonSame(t, exported, string(raw)) {
			t.Fatalf("token export:\n%s\nwant\n%s", exported, raw)
		}
	}
}

// TestOurReaderAfterCryptsetup: cryptsetup changes the header (a new
// keyslot, an imported token); we still unlock through the KMS.
func TestOurReaderAfterCryptsetup(t *testing.T) {
	tstest.NeedCryptsetup(t)
	k := newKMS(t)
	path, f := newFile(t, imageSize)
	recovery := writePass(t, "recovery")
	if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key, RecoveryPassphrase: []byte("recovery"), RecoveryKDF: fastArgon2id}}); err != nil {
		t.Fatal(err)
	}
	tstest.MustCryptsetup(t, "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", recovery, path, writePass(t, "third"))
	other := filepath.Join(t.TempDir(), "token.json")
	if err := os.WriteFile(other, []byte(`{"type":"site-local","keyslots":["2"],"note":"kept"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tstest.MustCryptsetup(t, "token", "import", "--json-file", other, path)
	f.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vk, err := Unlock(ctx, f, k.store)
	if err != nil {
		t.Fatalf("Unlock after cryptsetup changes: %v", err)
	}
	tk, err := OpenWithPassphrase(f, []byte("third"))
	if err != nil || !tk.Equal(vk) {
		t.Fatalf("cryptsetup's keyslot: %v", err)
	}
	vk.Wipe()
	tk.Wipe()
	// Our writes keep cryptsetup's token.
	if _, err := Rewrap(ctx, f, k.store, k.newKey(t)); err != nil {
		t.Fatal(err)
	}
	if out := tstest.MustCryptsetup(t, "token", "export", "--token-id", "1", path); !strings.Contains(out, `"note":"kept"`) {
		t.Fatalf("foreign token after rewrap: %s", out)
	}
	tstest.MustCryptsetup(t, "luksDump", path)
}

// TestEnrollCryptsetupVolume: a volume made by cryptsetup luksFormat and
// enrolled by us opens through the KMS and still with its passphrase.
func TestEnrollCryptsetupVolume(t *testing.T) {
	tstest.NeedCryptsetup(t)
	k := newKMS(t)
	for _, args := range [][]string{
		{"--sector-size", "4096"},
		{"--sector-size", "512", "--key-size", "256"}, // AES-128-XTS, a 32-byte key
	} {
		path, f := newFile(t, imageSize)
		f.Close()
		pass := writePass(t, "installer\n")
		tstest.LuksFormat(t, path, pass, args...)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := Enroll(ctx, f, k.store, []byte("installer\n"), EnrollOptions{KeyID: k.key}); err != nil {
			t.Fatal(err)
		}
		vk, err := Unlock(ctx, f, k.store)
		if err != nil {
			t.Fatal(err)
		}
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-file", pass, path)
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--volume-key-file", writePass(t, string(vk.Bytes())), path)
		vk.Wipe()
		if out := tstest.MustCryptsetup(t, "luksDump", path); !strings.Contains(out, "kmsagent") {
			t.Fatalf("luksDump after enroll:\n%s", out)
		}
		if _, err := Unenroll(ctx, f); err != nil {
			t.Fatal(err)
		}
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-file", pass, path)
		if out := tstest.MustCryptsetup(t, "luksDump", path); strings.Contains(out, "kmsagent") || strings.Contains(out, "  1: luks2") {
			t.Fatalf("luksDump after unenroll:\n%s", out)
		}
	}
}

func jsonSame(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
