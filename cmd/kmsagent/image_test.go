package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// runStdin runs kmsagent in-process with stdin; stdout may be binary.
func (c *cli) runStdin(stdin []byte, args ...string) result {
	c.t.Helper()
	var out, errb tstest.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, stdin: bytes.NewReader(stdin)}
	code := run(context.Background(), env, append([]string{"--config", c.config}, args...))
	return result{code, out.String(), errb.String()}
}

func TestImageCLI(t *testing.T) {
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "images")
	data := randomBytes(3<<20 + 777)
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sector := range []string{"512", "4096"} {
		img := filepath.Join(dir, "disk-"+sector+".img")
		r := c.mustRun("image", "encrypt", raw, img, "--key-id", "images", "--sector-size", sector)
		if !strings.Contains(r.stdout, "3146505 bytes of input") || r.stderr != "" {
			t.Fatalf("encrypt: %q %q", r.stdout, r.stderr)
		}
		back := filepath.Join(dir, "back-"+sector+".raw")
		c.mustRun("image", "decrypt", img, back)
		if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
			t.Fatalf("sector %s: decrypt gave %d bytes, not the input", sector, len(got))
		}
		if fi, _ := os.Stat(back); fi.Mode().Perm() != 0o600 {
			t.Fatalf("plaintext output mode %v", fi.Mode())
		}
		// Streams: stdin to stdout and back; the size is given by stdin
		// only when it is a file, so a pipe-like reader gets padding.
		enc := c.runStdin(data, "image", "encrypt", "-", "-", "--key-id", "images", "--sector-size", sector)
		if enc.code != 0 || !strings.Contains(enc.stderr, "decrypt will give") {
			t.Fatalf("stream encrypt: %d %q", enc.code, enc.stderr)
		}
		simg := filepath.Join(dir, "stream-"+sector+".img")
		os.WriteFile(simg, []byte(enc.stdout), 0o600)
		dec := c.mustRun("image", "decrypt", simg, "-")
		if !bytes.HasPrefix([]byte(dec.stdout), data) || len(dec.stdout)%512 != 0 {
			t.Fatalf("stream decrypt: %d bytes", len(dec.stdout))
		}
	}

	img := filepath.Join(dir, "disk-4096.img")
	var info struct {
		UUID    string `json:"uuid"`
		Segment struct {
			ImageSize  int64 `json:"image_size"`
			SectorSize int   `json:"sector_size"`
		} `json:"segment"`
		Tokens []struct {
			Type  string `json:"type"`
			KeyID string `json:"kms_key_id"`
		} `json:"tokens"`
	}
	r := c.mustRun("image", "inspect", img, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.Segment.ImageSize != int64(len(data)) || info.Segment.SectorSize != 4096 || len(info.Tokens) != 2 {
		t.Fatalf("inspect --json: %v %s", err, r.stdout)
	}
	if r := c.mustRun("image", "inspect", img); !strings.Contains(r.stdout, "raw image 3146505 bytes") {
		t.Fatalf("inspect: %s", r.stdout)
	}

	// rewrap: payload bytes identical, only the token changes.
	before, _ := os.ReadFile(img)
	other := strings.TrimSpace(c.mustRun("kms", "create-key").stdout)
	c.mustRun("image", "rewrap", img, "--key-id", other)
	after, _ := os.ReadFile(img)
	const dataOffset = 16 << 20
	if sha256.Sum256(before[dataOffset:]) != sha256.Sum256(after[dataOffset:]) || len(before) != len(after) {
		t.Fatal("rewrap changed the payload")
	}
	if !bytes.Equal(before[0x8000:dataOffset], after[0x8000:dataOffset]) {
		t.Fatal("rewrap changed the keyslot area")
	}
	var info2 struct {
		Tokens []struct {
			KeyID string `json:"kms_key_id"`
		} `json:"tokens"`
		Keyslots json.RawMessage `json:"keyslots"`
		Segment  json.RawMessage `json:"segment"`
	}
	var info1 = info2
	json.Unmarshal([]byte(r.stdout), &info1)
	json.Unmarshal([]byte(c.mustRun("image", "inspect", img, "--json").stdout), &info2)
	if info2.Tokens[0].KeyID != other || string(info1.Keyslots) != string(info2.Keyslots) || string(info1.Segment) != string(info2.Segment) {
		t.Fatalf("after rewrap: %+v", info2)
	}
	back := filepath.Join(dir, "after-rewrap.raw")
	c.mustRun("image", "decrypt", img, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatal("decrypt after rewrap")
	}
}

func TestImageCLIRefusals(t *testing.T) {
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "images")
	raw := writeFile(t, filepath.Join(dir, "in.raw"), "hello", 0o600)
	img := filepath.Join(dir, "in.img")
	c.mustRun("image", "encrypt", raw, img, "--key-id", "images")
	wrong := writeFile(t, filepath.Join(dir, "wrong"), "nope", 0o600)
	out := filepath.Join(dir, "out.raw")
	tests := []struct {
		want string
		args []string
	}{
		{"already exists", []string{"image", "encrypt", raw, img, "--key-id", "images"}},
		{"already exists", []string{"image", "decrypt", img, raw}},
		{"not found", []string{"image", "encrypt", raw, out, "--key-id", "nope"}},
		{"no such file", []string{"image", "encrypt", filepath.Join(dir, "missing"), out, "--key-id", "images"}},
		{"not a LUKS2 volume", []string{"image", "decrypt", raw, out}},
		{"does not exist", []string{"image", "decrypt", filepath.Join(dir, "missing"), out}},
		{"opens no keyslot", []string{"image", "decrypt", img, out, "--passphrase-file", wrong}},
		{"not a LUKS2 volume", []string{"image", "inspect", raw}},
	}
	for _, tt := range tests {
		c.refuseRun(tt.want, tt.args...)
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v left %s behind", tt.args, out)
		}
		if entries, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(entries) != 0 {
			t.Fatalf("%v left temporary files: %v", tt.args, entries)
		}
	}
	for _, args := range [][]string{
		{"image"}, {"image", "frobnicate"}, {"image", "encrypt", raw}, {"image", "encrypt", raw, out},
		{"image", "encrypt", raw, out, "--key-id", "images", "--sector-size", "2048"},
		{"image", "encrypt", raw, out, "--key-id", "images", "--progress", "yes"},
		{"image", "decrypt", img, out, "--progress=sometimes"},
	} {
		if r := c.run(args...); r.code != 2 {
			t.Fatalf("%v: exit %d, want 2: %s", args, r.code, r.stderr)
		}
	}
}

// TestImageProgress: --progress=always draws on stderr even when it is
// not a terminal and ends with a summary; never (and auto, when stderr is
// not a terminal, as in TestImageCLI) draws nothing.
func TestImageProgress(t *testing.T) {
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "images")
	raw := filepath.Join(dir, "in.raw")
	os.WriteFile(raw, randomBytes(3<<20), 0o600)
	img := filepath.Join(dir, "in.img")
	r := c.mustRun("image", "encrypt", raw, img, "--key-id", "images", "--progress=always")
	if !strings.HasPrefix(r.stderr, "\r") || !strings.Contains(r.stderr, "3.0 MiB in ") || !strings.HasSuffix(r.stderr, "/s\x1b[K\n") {
		t.Fatalf("encrypt --progress=always drew %q", r.stderr)
	}
	r = c.mustRun("image", "decrypt", img, filepath.Join(dir, "back.raw"), "--progress", "always")
	if !strings.Contains(r.stderr, "3.0 MiB in ") {
		t.Fatalf("decrypt --progress=always drew %q", r.stderr)
	}
	if r := c.mustRun("image", "decrypt", img, filepath.Join(dir, "back2.raw"), "--progress=never"); r.stderr != "" {
		t.Fatalf("decrypt --progress=never drew %q", r.stderr)
	}
}

// TestImageEncryptSectorSize: an ext4 with 1024-byte blocks gets
// 512-byte sectors unless told otherwise (4096 would make an image the
// kernel cannot mount: "bad block size 1024"), and an explicit 4096 is
// refused with what to pass instead.
func TestImageEncryptSectorSize(t *testing.T) {
	c := localCLI(t)
	dir := t.TempDir()
	c.mustRun("kms", "create-key", "--alias", "images")
	fs := make([]byte, 1<<20) // an ext2 superblock: 1024-byte blocks
	fs[1024+0x38], fs[1024+0x39] = 0x53, 0xEF
	raw := filepath.Join(dir, "fs.raw")
	if err := os.WriteFile(raw, fs, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "fs.img")
	r := c.mustRun("image", "encrypt", raw, img, "--key-id", "images")
	if !strings.Contains(r.stdout, "in 512-byte sectors to suit an ext2 file system (1024-byte blocks),") {
		t.Fatalf("encrypt: %q", r.stdout)
	}
	inspect := c.mustRun("image", "inspect", "--json", img)
	var info struct {
		Segment struct {
			SectorSize int `json:"sector_size"`
		} `json:"segment"`
	}
	if err := json.Unmarshal([]byte(inspect.stdout), &info); err != nil || info.Segment.SectorSize != 512 {
		t.Fatalf("inspect: %s %v", inspect.stdout, err)
	}
	out := filepath.Join(dir, "fs4k.img")
	c.refuseRun(raw+": the input holds an ext2 file system (1024-byte blocks), which cannot be used on a device with 4096-byte sectors; use --sector-size 512, or leave --sector-size out",
		"image", "encrypt", raw, out, "--key-id", "images", "--sector-size", "4096")
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused encrypt left its output")
	}
	r = c.mustRun("image", "encrypt", raw, out, "--key-id", "images", "--sector-size", "512")
	if !strings.Contains(r.stdout, "in 512-byte sectors,") {
		t.Fatalf("encrypt --sector-size 512: %q", r.stdout)
	}
}

// TestImageDecryptCryptsetupImage: any LUKS2 image opens with a
// passphrase, here one made by cryptsetup luksFormat.
func TestImageDecryptCryptsetupImage(t *testing.T) {
	tstest.NeedCryptsetup(t)
	c := localCLI(t)
	dir := t.TempDir()
	disk := sparseFile(t, dir, 18<<20)
	pass := writeFile(t, filepath.Join(dir, "pass"), "cryptsetup made me\n", 0o600)
	tstest.LuksFormat(t, disk, pass)
	out := filepath.Join(dir, "out.raw")
	c.mustRun("image", "decrypt", disk, out, "--passphrase-file", pass)
	if fi, err := os.Stat(out); err != nil || fi.Size() != 2<<20 {
		t.Fatalf("decrypted %v %v, want the 2 MiB segment", fi, err)
	}
	if r := c.mustRun("image", "inspect", disk); !strings.Contains(r.stdout, "Payload:       2097152 bytes") {
		t.Fatalf("inspect: %s", r.stdout)
	}
}
