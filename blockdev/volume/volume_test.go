package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/probe"
	"kmsagent/blockdev/token"
	"kmsagent/kmsclient"
)

var ctx = context.Background()

func TestFormatUnlockRecovery(t *testing.T) {
	k := newKMS(t)
	for _, sector := range []int{512, 4096} {
		_, f := newFile(t, imageSize)
		res, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{
			KeyID: "disks", SectorSize: sector, RecoveryPassphrase: []byte("correct horse\n"), RecoveryKDF: fastArgon2id,
		}})
		if err != nil {
			t.Fatal(err)
		}
		if res.KeyID != k.key || res.Keyslot != 0 || res.RecoveryKeyslot != 1 || res.TokenID != 0 {
			t.Fatalf("result %+v (alias must be stored as the key id %s)", res, k.key)
		}
		h, err := ReadHeader(f)
		if err != nil {
			t.Fatal(err)
		}
		seg, _ := h.Segment()
		if seg.SectorSize != sector || seg.Encryption != "aes-xts-plain64" || seg.KeySize != 64 || h.UUID() != res.UUID {
			t.Fatalf("segment %+v", seg)
		}
		ks := h.Keyslots()
		if len(ks) != 2 || ks[0].KDF != token.KDF() || ks[1].KDF != fastArgon2id {
			t.Fatalf("keyslots %+v", ks)
		}
		vk, err := Unlock(ctx, f, k.store)
		if err != nil {
			t.Fatal(err)
		}
		rk, err := OpenWithPassphrase(f, []byte("correct horse\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !vk.Equal(rk) || vk.Len() != 64 {
			t.Fatal("KMS and recovery keyslots hold different keys")
		}
		ek, err := ExportKey(ctx, f, k.store, nil)
		if err != nil || !ek.Equal(vk) {
			t.Fatalf("ExportKey: %v", err)
		}
		for _, key := range []interface{ Wipe() }{vk, rk, ek} {
			key.Wipe()
		}
		if _, err := OpenWithPassphrase(f, []byte("correct horse")); !errors.Is(err, luks2.ErrWrongPassphrase) || !strings.Contains(err.Error(), "trailing newline") {
			t.Fatalf("passphrase without its newline: %v", err)
		}
	}
}

func TestFormatRefuses(t *testing.T) {
	k := newKMS(t)
	put := func(off int64, b []byte) func(*os.File) {
		return func(f *os.File) { f.WriteAt(b, off) }
	}
	le16 := func(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }
	tests := []struct {
		name    string
		size    int64
		prepare func(*os.File)
		opts    FormatOptions
		want    string
		force   bool // --force formats it
	}{
		{"ext2", imageSize, put(1024+56, le16(0xEF53)), FormatOptions{}, "an ext2 file system (1024-byte blocks)", true},
		{"xfs", imageSize, func(f *os.File) { f.WriteAt([]byte("XFSB\x00\x00\x10\x00"), 0); f.WriteAt([]byte{2, 0}, 102) }, FormatOptions{}, "XFS file system (512-byte sectors)", true},
		{"btrfs", imageSize, func(f *os.File) { f.WriteAt([]byte("_BHRfS_M"), 0x10040); f.WriteAt(le16(4096), 0x10090) }, FormatOptions{}, "Btrfs", true},
		{"swap", imageSize, put(4086, []byte("SWAPSPACE2")), FormatOptions{}, "swap", true},
		{"vfat", imageSize, func(f *os.File) {
			f.WriteAt([]byte("FAT32   "), 82)
			f.WriteAt(le16(512), 11)
			f.WriteAt([]byte{0x55, 0xAA}, 510)
		}, FormatOptions{}, "FAT", true},
		{"lvm2", imageSize, put(512, []byte("LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00LVM2 001")), FormatOptions{}, "LVM2 physical volume (at offset 0x218)", true},
		{"ext4 and swap", imageSize, func(f *os.File) { f.WriteAt(le16(0xEF53), 1024+56); f.WriteAt([]byte("SWAPSPACE2"), 4086) }, FormatOptions{}, "file system (1024-byte blocks) (at offset 0x438) and a swap area (at offset 0xff6)", true},
		{"mbr", imageSize, put(510, []byte{0x55, 0xAA}), FormatOptions{}, "MBR", true},
		{"gpt", imageSize, put(512, []byte("EFI PART")), FormatOptions{}, "GPT", true},
		// Signatures in the data area survive the header write; a forced
		// format must erase them, or the new volume is ambiguous.
		{"md 1.0 at the end", imageSize, put(imageSize-8192, mdSuperblock(imageSize-8192)), FormatOptions{}, "MD RAID member (superblock 1.0)", true},
		{"zfs label at the end", imageSize, put(imageSize-256<<10+128<<10+5<<10, []byte("\x0c\xb1\xba\x00\x00\x00\x00\x00\x1c")), FormatOptions{}, "ZFS pool member", true},
		{"luks1", imageSize, put(0, []byte("LUKS\xba\xbe\x00\x01")), FormatOptions{}, "LUKS1", true},
		{"luks2", imageSize, put(0, []byte("LUKS\xba\xbe\x00\x02")), FormatOptions{}, "LUKS2 header", true},
		{"luks2 secondary", imageSize, put(0x8000, []byte("SKUL\xba\xbe\x00\x02")), FormatOptions{}, "secondary", true},
		{"too small", 16 << 20, nil, FormatOptions{}, "at least one", false},
		{"unaligned", imageSize + 512, nil, FormatOptions{}, "not a multiple of the 4096-byte sector size", false},
		{"bad sector size", imageSize, nil, FormatOptions{CreateOptions: CreateOptions{SectorSize: 1024}}, "use 512 or 4096", false},
		{"unknown key", imageSize, nil, FormatOptions{CreateOptions: CreateOptions{KeyID: "nope"}}, "not found", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, f := newFile(t, tt.size)
			if tt.prepare != nil {
				tt.prepare(f)
			}
			before := fileHash(t, path)
			o := tt.opts
			if o.KeyID == "" {
				o.KeyID = k.key
			}
			_, err := Format(ctx, f, k.store, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Format: %v, want an error with %q", err, tt.want)
			}
			var existing *ExistingDataError
			if errors.As(err, &existing) != tt.force {
				t.Fatalf("Format: %v is an ExistingDataError: %v, want %v", err, !tt.force, tt.force)
			}
			if fileHash(t, path) != before {
				t.Fatal("a refused format changed the device")
			}
			if tt.force {
				o.Force = true
				if _, err := Format(ctx, f, k.store, o); err != nil {
					t.Fatalf("forced format: %v", err)
				}
				sigs, err := probe.Scan(f, tt.size)
				if err != nil || len(sigs) != 2 || sigs[0].Name != "a LUKS2 header" || !sigs[1].Secondary {
					t.Fatalf("after format the device holds %v (%v)", sigs, err)
				}
			}
		})
	}
}

// luksFormatted makes a volume the way another tool would: a header with
// one passphrase keyslot and no token.
func luksFormatted(t *testing.T, pass string) (string, *os.File) {
	t.Helper()
	path, f := newFile(t, imageSize)
	h, vk, err := luks2.Format(luks2.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	if err := h.WipeKeyslotsArea(f); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddKeyslot(f, vk, []byte(pass), token.KDF()); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	return path, f
}

func TestEnrollUnenroll(t *testing.T) {
	k := newKMS(t)
	path, f := luksFormatted(t, "installer passphrase")
	before := fileHash(t, path)
	if _, err := Unlock(ctx, f, k.store); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Unlock before enroll: %v", err)
	}
	if _, err := Enroll(ctx, f, k.store, []byte("wrong"), EnrollOptions{KeyID: k.key}); !errors.Is(err, luks2.ErrWrongPassphrase) {
		t.Fatalf("enroll with a wrong passphrase: %v", err)
	}
	if _, err := Enroll(ctx, f, k.store, []byte("installer passphrase"), EnrollOptions{KeyID: "missing"}); !errors.Is(err, kmsclient.ErrKeyNotFound) {
		t.Fatalf("enroll with a missing KMS key: %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a refused enroll changed the volume")
	}
	res, err := Enroll(ctx, f, k.store, []byte("installer passphrase"), EnrollOptions{KeyID: k.key, Region: "eu-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Keyslot != 1 || res.TokenID != 0 {
		t.Fatalf("enroll result %+v", res)
	}
	vk, err := Unlock(ctx, f, k.store)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := OpenWithPassphrase(f, []byte("installer passphrase"))
	if err != nil || !pk.Equal(vk) {
		t.Fatalf("original passphrase after enroll: %v", err)
	}
	vk.Wipe()
	pk.Wipe()
	h, _ := ReadHeader(f)
	raw, _ := h.Token(0)
	tok, err := token.Parse(raw)
	if err != nil || tok.KMS.Region != "eu-1" || tok.Binding != h.UUID() || tok.Keyslot != 1 {
		t.Fatalf("token %s: %v", raw, err)
	}
	if _, err := Enroll(ctx, f, k.store, []byte("installer passphrase"), EnrollOptions{KeyID: k.key}); err == nil || !strings.Contains(err.Error(), "already enrolled") {
		t.Fatalf("second enroll: %v", err)
	}

	removed, err := Unenroll(ctx, f)
	if err != nil || len(removed) != 1 || removed[0] != 1 {
		t.Fatalf("Unenroll: %v %v", removed, err)
	}
	if _, err := Unlock(ctx, f, k.store); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Unlock after unenroll: %v", err)
	}
	if _, err := Unenroll(ctx, f); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("second unenroll: %v", err)
	}
	pk, err = OpenWithPassphrase(f, []byte("installer passphrase"))
	if err != nil {
		t.Fatalf("passphrase after unenroll: %v", err)
	}
	pk.Wipe()
}

func TestUnenrollKeepsLastKeyslot(t *testing.T) {
	k := newKMS(t)
	path, f := newFile(t, imageSize)
	if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	if _, err := Unenroll(ctx, f); err == nil || !strings.Contains(err.Error(), "only keyslot") {
		t.Fatalf("Unenroll of the only keyslot: %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a refused unenroll changed the volume")
	}
}

func TestRewrap(t *testing.T) {
	k := newKMS(t)
	path, f := newFile(t, imageSize)
	res, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key, RecoveryPassphrase: []byte("r"), RecoveryKDF: fastArgon2id}})
	if err != nil {
		t.Fatal(err)
	}
	// Data in the payload must survive untouched.
	payload := bytes.Repeat([]byte("payload!"), 1<<17)
	if _, err := f.WriteAt(payload, 16<<20); err != nil {
		t.Fatal(err)
	}
	h0, _ := ReadHeader(f)
	vk0, _ := Unlock(ctx, f, k.store)
	defer vk0.Wipe()
	area0 := readRange(t, path, 0x8000, 16<<20-0x8000) // keyslot area

	newKey := k.newKey(t)
	old, err := Rewrap(ctx, f, k.store, newKey)
	if err != nil || len(old) != 1 || old[0] != res.KeyID {
		t.Fatalf("Rewrap: %v %v", old, err)
	}
	h1, _ := ReadHeader(f)
	if h1.SeqID() != h0.SeqID()+1 {
		t.Fatalf("seqid %d -> %d, want one write", h0.SeqID(), h1.SeqID())
	}
	raw0, _ := h0.Token(0)
	raw1, _ := h1.Token(0)
	t0, _ := token.Parse(raw0)
	t1, _ := token.Parse(raw1)
	if t1.KMS.KeyID != newKey || bytes.Equal(t0.WrappedKey, t1.WrappedKey) || t1.Keyslot != t0.Keyslot || t1.Binding != t0.Binding {
		t.Fatalf("token after rewrap: %s", raw1)
	}
	// Everything but the token is unchanged.
	if !jsonEqualExceptTokens(t, h0.JSON(), h1.JSON()) {
		t.Fatalf("rewrap changed more than the token:\n%s\n%s", h0.JSON(), h1.JSON())
	}
	if !bytes.Equal(readRange(t, path, 0x8000, 16<<20-0x8000), area0) {
		t.Fatal("rewrap changed the keyslot area")
	}
	if !bytes.Equal(readRange(t, path, 16<<20, int64(len(payload))), payload) {
		t.Fatal("rewrap changed the payload")
	}
	// The old key can go; the volume still unlocks.
	if err := k.store.DisableKey(ctx, res.KeyID); err != nil {
		t.Fatal(err)
	}
	vk1, err := Unlock(ctx, f, k.store)
	if err != nil || !vk1.Equal(vk0) {
		t.Fatalf("Unlock after rewrap: %v", err)
	}
	vk1.Wipe()
	// Rewrapping from a disabled key fails before anything is written.
	if err := k.store.DisableKey(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	if _, err := Rewrap(ctx, f, k.store, res.KeyID); !errors.Is(err, kmsclient.ErrKeyDisabled) {
		t.Fatalf("Rewrap with a disabled key: %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a failed rewrap changed the volume")
	}
}

func readRange(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonEqualExceptTokens(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ma, mb map[string]json.RawMessage
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		t.Fatal("header JSON does not parse")
	}
	delete(ma, "tokens")
	delete(mb, "tokens")
	ja, _ := json.Marshal(ma)
	jb, _ := json.Marshal(mb)
	return bytes.Equal(ja, jb)
}

func TestUnlockRefusals(t *testing.T) {
	k := newKMS(t)
	_, fa := newFile(t, imageSize)
	_, fb := newFile(t, imageSize)
	for _, f := range []*os.File{fa, fb} {
		if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key, RecoveryPassphrase: []byte("r"), RecoveryKDF: fastArgon2id}}); err != nil {
			t.Fatal(err)
		}
	}
	ha, _ := ReadHeader(fa)
	hb, _ := ReadHeader(fb)
	rawA, _ := ha.Token(0)
	tokA, _ := token.Parse(rawA)

	// Both ways through a token, to the volume key and to the keyslot
	// passphrase for cryptsetup, refuse the same tokens.
	unlockers := []struct {
		name string
		open func(*os.File) error
	}{
		{"Unlock", func(f *os.File) error {
			vk, err := Unlock(ctx, f, k.store)
			if err == nil {
				vk.Wipe()
			}
			return err
		}},
		{"Passphrase", func(f *os.File) error {
			pass, _, err := Passphrase(ctx, f, k.store)
			if err == nil {
				pass.Wipe()
			}
			return err
		}},
	}
	setToken := func(t *testing.T, f *os.File, raw []byte) {
		t.Helper()
		h, _ := ReadHeader(f)
		if err := h.SetToken(0, raw); err != nil {
			t.Fatal(err)
		}
		if err := h.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("token copied from another volume", func(t *testing.T) {
		setToken(t, fb, rawA)
		for _, u := range unlockers {
			if err := u.open(fb); err == nil || !strings.Contains(err.Error(), "bound to volume "+ha.UUID()) || !strings.Contains(err.Error(), hb.UUID()) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("binding rewritten to this volume", func(t *testing.T) {
		forged := *tokA
		forged.Binding = hb.UUID()
		raw, _ := forged.Marshal()
		setToken(t, fb, raw)
		// The KMS authenticates the binding: the wrapped key does not open.
		for _, u := range unlockers {
			if err := u.open(fb); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("other provider", func(t *testing.T) {
		other := *tokA
		other.Binding, other.KMS.Provider = hb.UUID(), "aws"
		raw, _ := other.Marshal()
		setToken(t, fb, raw)
		for _, u := range unlockers {
			if err := u.open(fb); err == nil || !strings.Contains(err.Error(), `provider = "aws"`) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("damaged token", func(t *testing.T) {
		setToken(t, fb, []byte(`{"type":"kmsagent","keyslots":["0"],"version":7}`))
		for _, u := range unlockers {
			if err := u.open(fb); !errors.Is(err, token.ErrInvalid) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("not LUKS2", func(t *testing.T) {
		_, f := newFile(t, imageSize)
		for _, u := range unlockers {
			if err := u.open(f); !errors.Is(err, luks2.ErrNotLUKS2) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("tiny file", func(t *testing.T) {
		_, f := newFile(t, 5)
		for _, u := range unlockers {
			if err := u.open(f); !errors.Is(err, luks2.ErrNotLUKS2) {
				t.Fatalf("%s: %v", u.name, err)
			}
		}
	})
	t.Run("both copies damaged", func(t *testing.T) {
		path, f := newFile(t, imageSize)
		if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0x1000, 0x4000 + 0x1000} {
			f.WriteAt([]byte("}}}}"), off)
		}
		for _, u := range unlockers {
			if err := u.open(f); !errors.Is(err, luks2.ErrInvalidHeader) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("%s: %v (%s)", u.name, err, path)
			}
		}
	})
	t.Run("primary damaged", func(t *testing.T) {
		_, f := newFile(t, imageSize)
		if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("}}}}"), 0x1000)
		for _, u := range unlockers {
			if err := u.open(f); err != nil {
				t.Fatalf("%s via the secondary copy: %v", u.name, err)
			}
		}
	})
}

// TestPassphrase: the passphrase opens the KMS keyslot to the volume key
// Unlock returns, and the KMS key of the token comes back with it, and
// with a refusal, for the audit record.
func TestPassphrase(t *testing.T) {
	k := newKMS(t)
	_, f := newFile(t, imageSize)
	res, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key, RecoveryPassphrase: []byte("r"), RecoveryKDF: fastArgon2id}})
	if err != nil {
		t.Fatal(err)
	}
	pass, cmk, err := Passphrase(ctx, f, k.store)
	if err != nil {
		t.Fatal(err)
	}
	defer pass.Wipe()
	if cmk.KeyID != k.key || cmk.Provider != k.store.Provider() {
		t.Errorf("KMS key %+v, want %s of %s", cmk, k.key, k.store.Provider())
	}
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.OpenKeyslot(f, res.Keyslot, pass.Bytes())
	if err != nil {
		t.Fatalf("the passphrase does not open keyslot %d: %v", res.Keyslot, err)
	}
	defer got.Wipe()
	want, err := Unlock(ctx, f, k.store)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Wipe()
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("the passphrase opens a keyslot to another volume key than Unlock's")
	}

	if err := k.store.DisableKey(ctx, k.key); err != nil {
		t.Fatal(err)
	}
	if _, cmk, err := Passphrase(ctx, f, k.store); !errors.Is(err, kmsclient.ErrKeyDisabled) || cmk.KeyID != k.key {
		t.Errorf("with the key disabled: KMS key %+v, %v; want %s and ErrKeyDisabled", cmk, err, k.key)
	}
	if _, err := Unenroll(ctx, f); err != nil {
		t.Fatal(err)
	}
	if _, cmk, err := Passphrase(ctx, f, k.store); !errors.Is(err, ErrNotEnrolled) || cmk != (token.KMS{}) {
		t.Errorf("without a token: KMS key %+v, %v; want none and ErrNotEnrolled", cmk, err)
	}
}

func TestOpenDevice(t *testing.T) {
	if _, err := OpenDevice("/nonexistent/disk.img", false); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing: %v", err)
	}
	if _, err := OpenDevice(t.TempDir(), false); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Fatalf("directory: %v", err)
	}
	path, _ := newFile(t, 4096)
	f, err := OpenDevice(path, true)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestRewrapSameKeyAfterRotation re-wraps under the current version of
// the same CMK, by alias: the token keeps the key id, the wrapped key
// changes, and the volume key stays.
func TestRewrapSameKeyAfterRotation(t *testing.T) {
	k := newKMS(t)
	_, f := newFile(t, imageSize)
	if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
		t.Fatal(err)
	}
	vk0, _ := Unlock(ctx, f, k.store)
	defer vk0.Wipe()
	h0, _ := ReadHeader(f)
	raw0, _ := h0.Token(0)
	if _, err := k.store.RotateKey(ctx, k.key); err != nil {
		t.Fatal(err)
	}
	old, err := Rewrap(ctx, f, k.store, "disks")
	if err != nil || old[0] != k.key {
		t.Fatalf("Rewrap: %v %v", old, err)
	}
	h1, _ := ReadHeader(f)
	raw1, _ := h1.Token(0)
	t0, _ := token.Parse(raw0)
	t1, _ := token.Parse(raw1)
	if t1.KMS.KeyID != k.key || bytes.Equal(t0.WrappedKey, t1.WrappedKey) {
		t.Fatalf("token after rewrap under the same key: %s", raw1)
	}
	vk1, err := Unlock(ctx, f, k.store)
	if err != nil || !vk1.Equal(vk0) {
		t.Fatalf("Unlock: %v", err)
	}
	vk1.Wipe()
}

// TestUnenrollCountsOnlyBoundKeyslots: an unbound keyslot does not open
// the volume, so it does not count as the keyslot left after unenroll.
func TestUnenrollCountsOnlyBoundKeyslots(t *testing.T) {
	k := newKMS(t)
	path, f := cryptsetupUnbound(t, "installer")
	if _, err := Enroll(ctx, f, k.store, []byte("installer"), EnrollOptions{KeyID: k.key}); err != nil {
		t.Fatal(err)
	}
	// Drop the passphrase keyslot: the KMS keyslot is the only one left
	// that opens the volume, next to the unbound keyslot 1.
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RemoveKeyslot(f, 0); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	if _, err := Unenroll(ctx, f); err == nil || !strings.Contains(err.Error(), "only keyslot") {
		t.Fatalf("Unenroll with only an unbound keyslot left: %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a refused unenroll changed the volume")
	}
	vk, err := Unlock(ctx, f, k.store)
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	tstest.MustCryptsetup(t, "open", "--test-passphrase", "--volume-key-file", writePass(t, string(vk.Bytes())), path)
}

// TestEnrollRefusesUnboundPassphrase: the passphrase of an unbound
// keyslot does not give the volume key, so it cannot enroll.
func TestEnrollRefusesUnboundPassphrase(t *testing.T) {
	k := newKMS(t)
	path, f := cryptsetupUnbound(t, "installer")
	before := fileHash(t, path)
	_, err := Enroll(ctx, f, k.store, []byte(unboundPass), EnrollOptions{KeyID: k.key})
	if !errors.Is(err, luks2.ErrUnboundKeyslot) || !strings.Contains(err.Error(), "unbound") {
		t.Fatalf("Enroll with the unbound keyslot's passphrase: %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a refused enroll changed the volume")
	}
	if _, err := OpenWithPassphrase(f, []byte(unboundPass)); !errors.Is(err, luks2.ErrUnboundKeyslot) {
		t.Fatalf("OpenWithPassphrase with the unbound keyslot's passphrase: %v", err)
	}
}
