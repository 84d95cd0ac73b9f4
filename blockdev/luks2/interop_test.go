package luks2

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// These tests check our output against cryptsetup itself, on image files
// only (nothing here needs root or device-mapper).

func cryptsetupFails(t *testing.T, args ...string) {
	t.Helper()
	if out, err := tstest.Cryptsetup(t, args...); err == nil {
		t.Fatalf("cryptsetup %s succeeded, want failure\n%s", strings.Join(args, " "), out)
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newImage formats a sparse image file with our code and adds keyslots.
func newImage(t *testing.T, opts FormatOptions, passes map[string]KDF) (string, *Header, []byte) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "luks.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, vk, err := Format(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	seg, err := h.Segment()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(seg.Offset) + 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := h.WipeKeyslotsArea(f); err != nil {
		t.Fatal(err)
	}
	for _, pass := range sortedStrings(passes) {
		if _, err := h.AddKeyslot(f, vk, []byte(pass), passes[pass]); err != nil {
			t.Fatalf("AddKeyslot: %v", err)
		}
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	return path, h, bytes.Clone(vk.Bytes())
}

func sortedStrings(m map[string]KDF) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestCryptsetupOpensOurImage(t *testing.T) {
	tstest.NeedCryptsetup(t)
	for _, tc := range []struct {
		name string
		opts FormatOptions
	}{
		{"default", FormatOptions{DigestIterations: 1000}},
		{"4k-sectors-64k-metadata", FormatOptions{DigestIterations: 1000, SectorSize: 4096, MetadataSize: 64 << 10, Label: "data", Subsystem: "kmsagent"}},
		{"aes-128-xts", FormatOptions{DigestIterations: 1000, KeySize: 32, DataOffset: 4 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			passes := map[string]KDF{"pbkdf2 pass": fastPBKDF2, "argon2 pass\n": fastArgon2id}
			path, h, vk := newImage(t, tc.opts, passes)
			dir := filepath.Dir(path)

			dump := tstest.MustCryptsetup(t, "luksDump", path)
			for _, want := range []string{h.UUID(), "pbkdf2", "argon2id", "aes-xts-plain64"} {
				if !strings.Contains(dump, want) {
					t.Errorf("luksDump lacks %q:\n%s", want, dump)
				}
			}
			if tc.opts.Label != "" && !strings.Contains(dump, tc.opts.Label) {
				t.Errorf("luksDump lacks the label:\n%s", dump)
			}
			for pass := range passes {
				// --key-file takes the bytes as they are, newline included.
				kf := writeFile(t, dir, "pass", []byte(pass))
				tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-file", kf, path)
			}
			kf := writeFile(t, dir, "wrong", []byte(wrongPass))
			cryptsetupFails(t, "open", "--test-passphrase", "--key-file", kf, path)
			vkf := writeFile(t, dir, "vk", vk)
			tstest.MustCryptsetup(t, "open", "--test-passphrase", "--volume-key-file", vkf, path)
		})
	}
}

func TestCryptsetupChangesOurImage(t *testing.T) {
	tstest.NeedCryptsetup(t)
	path, h, vk := newImage(t, FormatOptions{DigestIterations: 1000}, map[string]KDF{"first": fastPBKDF2})
	dir := filepath.Dir(path)

	// A token we set must come out of cryptsetup as we put it in.
	token := json.RawMessage(`{"type":"kmsagent","keyslots":["0"],"kms":"local","key_id":"a1b2","wrapped":"c2VjcmV0","n":3}`)
	f := openFile(t, path)
	if err := h.SetToken(0, token); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	exported := tstest.MustCryptsetup(t, "token", "export", "--token-id", "0", path)
	if !jsonEqual(t, []byte(exported), token) {
		t.Errorf("cryptsetup token export = %s, want %s", exported, token)
	}

	// cryptsetup adds a keyslot and a token of its own.
	oldPass := writeFile(t, dir, "old", []byte("first"))
	newPass := writeFile(t, dir, "new", []byte("second"))
	tstest.MustCryptsetup(t, "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", oldPass, path, newPass)
	theirs := json.RawMessage(`{"type":"other-tool","keyslots":["1"],"blob":{"nested":[1,2,3]}}`)
	tf := writeFile(t, dir, "token.json", theirs)
	tstest.MustCryptsetup(t, "token", "import", "--json-file", tf, "--token-id", "5", path)

	h2, err := Read(f)
	if err != nil {
		t.Fatalf("Read after cryptsetup: %v", err)
	}
	for slot, pass := range map[int]string{0: "first", 1: "second"} {
		got, err := h2.OpenKeyslot(f, slot, []byte(pass))
		if err != nil {
			t.Fatalf("OpenKeyslot(%d): %v", slot, err)
		}
		if !bytes.Equal(got.Bytes(), vk) {
			t.Errorf("keyslot %d: wrong volume key", slot)
		}
		got.Wipe()
	}
	toks := h2.Tokens()
	if !jsonEqual(t, toks[0], token) || !jsonEqual(t, toks[5], theirs) {
		t.Errorf("tokens after cryptsetup: %s", h2.JSON())
	}

	// Our rewrite keeps cryptsetup's token and keyslot byte for byte.
	before := h2.JSON()
	if err := h2.SetLabel("relabelled", ""); err != nil {
		t.Fatal(err)
	}
	if err := h2.Write(f); err != nil {
		t.Fatal(err)
	}
	h3 := readHeader(t, f)
	if !bytes.Equal(h3.JSON(), before) {
		t.Errorf("JSON changed by a label-only rewrite:\n%s\n%s", before, h3.JSON())
	}
	if !strings.Contains(tstest.MustCryptsetup(t, "luksDump", path), "relabelled") {
		t.Errorf("label not seen by cryptsetup")
	}

	// Removing our keyslot 0 drops it from the token too, and cryptsetup
	// agrees the remaining keyslot works.
	if err := h3.RemoveKeyslot(f, 0); err != nil {
		t.Fatal(err)
	}
	cryptsetupFails(t, "open", "--test-passphrase", "--key-file", oldPass, path)
	tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-file", newPass, path)
	exported = tstest.MustCryptsetup(t, "token", "export", "--token-id", "0", path)
	var tok struct{ Keyslots []string }
	if err := json.Unmarshal([]byte(exported), &tok); err != nil || len(tok.Keyslots) != 0 {
		t.Errorf("token 0 after removing keyslot 0: %s (%v)", exported, err)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Errorf("bad JSON %s: %v", a, err)
		return false
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Errorf("bad JSON %s: %v", b, err)
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// A header we repaired after damage to its primary copy is one cryptsetup
// reads and opens without falling back.
func TestCryptsetupAcceptsRepairedHeader(t *testing.T) {
	tstest.NeedCryptsetup(t)
	path := unxz(t, "compatimage2.img.xz")
	f := openFile(t, path)
	if _, err := f.WriteAt([]byte{'X'}, binHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	h := readHeader(t, f)
	if len(h.Warnings()) == 0 {
		t.Fatal("no warning for the damaged primary")
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	// Damage the secondary now: cryptsetup must be using our new primary.
	if _, err := f.WriteAt([]byte{'X'}, 0x4000+binHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	kf := writeFile(t, t.TempDir(), "pass", []byte(compatPass0))
	tstest.MustCryptsetup(t, "open", "--test-passphrase", "--key-slot", "0", "--key-file", kf, path)
	if out := tstest.MustCryptsetup(t, "luksDump", path); !strings.Contains(out, "Epoch:         \t10") {
		t.Errorf("luksDump after repair:\n%s", out)
	}
}

// TestValidationMatchesCryptsetup: headers that differ from a valid one
// in one value are accepted or refused by Read as cryptsetup luksDump
// accepts or refuses them. The one deliberate difference is named.
func TestValidationMatchesCryptsetup(t *testing.T) {
	tstest.NeedCryptsetup(t)
	tests := []struct {
		name, old, new string
		accept         bool // by both
	}{
		{"valid", `"tokens":{}`, `"tokens":{}`, true},
		{"JSON nested 31 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(29, "") + `}}`, true},
		{"JSON nested 32 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(30, "") + `}}`, false},
		{"scalar nested 32 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(29, "1") + `}}`, false},
		{"empty segment encryption", `"size":"dynamic","encryption":"aes-cbc-essiv:sha256"`, `"size":"dynamic","encryption":""`, false},
		{"empty iv_tweak", `"iv_tweak":"0"`, `"iv_tweak":""`, false},
		{"empty token type", `"tokens":{}`, `"tokens":{"0":{"type":"","keyslots":[]}}`, false},
		{"empty string inside a token", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"note":""}}`, true},
		{"extra KDF member", `"iterations":1862,`, `"iterations":1862,"extra":1,`, true},
		{"segment size 2^63", `"size":"dynamic"`, `"size":"9223372036854775808"`, true},
		{"segment offset 2^63", `"offset":"4194304"`, `"offset":"9223372036854775808"`, true},
		{"detached header", `"offset":"4194304"`, `"offset":"0"`, true},
		{"segment inside the keyslot area", `"offset":"4194304"`, `"offset":"1048576"`, false},
		{"reencrypt keyslot", baseJSON, reencryptJSON, true},
		{"reencrypt keyslot without requirement", baseJSON, strings.Replace(reencryptJSON, `"online-reencrypt-v2"`, ``, 1), false},
		{"reencrypt keyslot with a bad mode", baseJSON, strings.Replace(reencryptJSON, `"mode":"reencrypt"`, `"mode":"x"`, 1), false},
		{"reencryption without backup-final", baseJSON, strings.Replace(reencryptJSON, `"flags":["backup-final"]`, `"flags":["backup-other"]`, 1), false},
		{"two reencryption requirements", baseJSON, strings.Replace(reencryptJSON, `"online-reencrypt-v2"`, `"online-reencrypt-v2","online-reencrypt-v3"`, 1), false},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(baseJSON, tc.old) {
				t.Fatalf("base JSON lacks %q", tc.old)
			}
			dev := imageFrom(t, strings.Replace(baseJSON, tc.old, tc.new, 1), nil)
			path := writeFile(t, dir, "img", dev.data)
			out, csErr := exec.Command(tstest.NeedCryptsetup(t), "--disable-locks", "luksDump", path).CombinedOutput()
			if (csErr == nil) != tc.accept {
				t.Fatalf("cryptsetup luksDump: %v (want accepted=%v)\n%s", csErr, tc.accept, out)
			}
			if _, err := Read(dev); (err == nil) != tc.accept {
				t.Errorf("Read: %v, want accepted=%v as cryptsetup", err, tc.accept)
			}
		})
	}

	// Deliberately stricter: an offset + size that wraps 64 bits is
	// refused; cryptsetup checks this only between several segments.
	dev := imageFrom(t, strings.Replace(baseJSON, `"size":"dynamic"`, `"size":"18446744073705357312"`, 1), nil)
	if _, err := Read(dev); !errors.Is(err, ErrInvalidHeader) {
		t.Errorf("Read of a segment whose end wraps: %v", err)
	}
}
