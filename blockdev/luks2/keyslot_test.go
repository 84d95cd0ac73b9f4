package luks2

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
)

func TestPBKDF2(t *testing.T) {
	// RFC 6070 vectors.
	for _, tc := range []struct {
		pass, salt string
		iter, n    int
		want       string
	}{
		{"password", "salt", 1, 20, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
		{"password", "salt", 4096, 20, "4b007901b765489abead49d926f721d065a429c1"},
		{"passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25, "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
		{"pass\x00word", "sa\x00lt", 4096, 16, "56fa6aa75548099dcc37d7f03425e0c3"},
	} {
		k, err := pbkdf2Key("sha1", []byte(tc.pass), []byte(tc.salt), tc.iter, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(k.Bytes()); got != tc.want {
			t.Errorf("PBKDF2-SHA1(%q, %q, %d) = %s, want %s", tc.pass, tc.salt, tc.iter, got, tc.want)
		}
		k.Wipe()
	}
	// Against the standard library, across block boundaries.
	for _, hn := range []string{"sha1", "sha256", "sha512"} {
		h, _ := hashByName(hn)
		for _, n := range []int{1, 31, 32, 33, 64, 65, 100} {
			want, err := pbkdf2.Key(h, "a passphrase", []byte("salty"), 1000, n)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pbkdf2Key(hn, []byte("a passphrase"), []byte("salty"), 1000, n)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("n=%d: %x, want %x", n, got.Bytes(), want)
			}
			got.Wipe()
		}
	}
}

// TestPBKDF2SHA256Shapes checks the compression-function path of
// PBKDF2-HMAC-SHA256 against the standard library where its layout
// changes: passwords longer than a block are hashed first, and the salt
// and counter of the first iteration can cross a block boundary.
func TestPBKDF2SHA256Shapes(t *testing.T) {
	for _, tc := range []struct{ pass, salt, iter, n int }{
		{0, 0, 1, 32}, {1, 32, 1, 32}, {64, 32, 2, 64}, {65, 32, 3, 64}, {200, 32, 1000, 33},
		{32, 27, 5, 32}, {32, 28, 5, 32}, {32, 51, 5, 32}, {32, 52, 5, 32}, {32, 60, 5, 32},
		{32, 64, 5, 32}, {32, 100, 5, 96}, {44, 32, 1000, 64},
	} {
		pass := bytes.Repeat([]byte{'p'}, tc.pass)
		salt := bytes.Repeat([]byte{'s'}, tc.salt)
		want, err := pbkdf2.Key(sha256.New, string(pass), salt, tc.iter, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, tc.n)
		pbkdf2SHA256(got, pass, salt, tc.iter)
		if !bytes.Equal(got, want) {
			t.Errorf("%+v: %x, want %x", tc, got, want)
		}
	}
}

// TestDiffuseSHA256 checks the compression-function diffusion against the
// same step through crypto/sha256, for every key size LUKS uses.
func TestDiffuseSHA256(t *testing.T) {
	fast, err := newDiffuser("sha256")
	if err != nil {
		t.Fatal(err)
	}
	slow := &diffuser{h: sha256.New(), sum: make([]byte, 0, sha256.Size)}
	for _, n := range []int{16, 24, 31, 32, 33, 48, 64, 65, 96, 128} {
		a := make([]byte, n)
		for i := range a {
			a[i] = byte(i*31 + n)
		}
		b := bytes.Clone(a)
		fast.diffuse(a)
		slow.diffuse(b)
		if !bytes.Equal(a, b) {
			t.Errorf("%d bytes: %x, want %x", n, a, b)
		}
	}
}

// afMerge recovers the key (len(dst) bytes) from its whole split in src,
// as an unlock does a piece at a time.
func afMerge(dst, src []byte, stripes int, hashName string) error {
	n := len(dst)
	if len(src) < n*stripes {
		return fmt.Errorf("luks2: af: %d bytes hold no %d stripes of %d", len(src), stripes, n)
	}
	m, err := newAFMerger(dst, make([]byte, n), stripes, hashName)
	if err != nil {
		return err
	}
	defer m.wipe()
	m.write(src[:n*stripes])
	return nil
}

func TestAFRoundTrip(t *testing.T) {
	for _, hn := range []string{"sha1", "sha256", "sha512"} {
		for _, n := range []int{16, 32, 64, 65} {
			key := bytes.Repeat([]byte{0xa5}, n)
			key[0] = byte(n)
			split := make([]byte, n*stripes)
			if err := afSplit(split, key, stripes, hn); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, n)
			if err := afMerge(got, split, stripes, hn); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Errorf("%s/%d: merge(split(k)) != k", hn, n)
			}
			// Any damaged stripe destroys the key.
			split[n*1234] ^= 1
			if afMerge(got, split, stripes, hn); bytes.Equal(got, key) {
				t.Errorf("%s/%d: key survived a damaged stripe", hn, n)
			}
		}
	}
}

// TestAFMergerPieces feeds a split to the merger in pieces that cut
// stripes anywhere, as an unlock does with key sizes that do not divide
// its chunk.
func TestAFMergerPieces(t *testing.T) {
	for _, n := range []int{32, 48, 64} {
		key := bytes.Repeat([]byte{0x3c}, n)
		key[1] = byte(n)
		split := make([]byte, n*stripes+100) // + padding to whole sectors
		if err := afSplit(split, key, stripes, "sha256"); err != nil {
			t.Fatal(err)
		}
		for _, piece := range []int{1, 7, 100, areaChunk, len(split)} {
			got := make([]byte, n)
			m, err := newAFMerger(got, make([]byte, n), stripes, "sha256")
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(split); off += piece {
				m.write(split[off:min(off+piece, len(split))])
			}
			if !m.complete() || !bytes.Equal(got, key) {
				t.Errorf("key %d bytes, pieces of %d: complete=%v, key %x", n, piece, m.complete(), got)
			}
		}
	}
}

func TestAreaCiphers(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 64)
	for _, tc := range []struct {
		spec   string
		keyLen int
		err    error
	}{
		{"aes-xts-plain64", 64, nil},
		{"aes-xts-plain64", 32, nil},
		{"aes-xts-plain", 64, nil},
		{"aes-cbc-essiv:sha256", 16, nil},
		{"aes-cbc-essiv:sha256", 32, nil},
		{"aes-cbc-plain64", 32, nil},
		{"aes-xts-plain64", 16, ErrUnsupported},
		{"serpent-xts-plain64", 64, ErrUnsupported},
		{"aes-ecb", 32, ErrUnsupported},
		{"aes-cbc-benbi", 32, ErrUnsupported},
	} {
		c, err := newAreaCipher(tc.spec, key[:tc.keyLen])
		if !errors.Is(err, tc.err) {
			t.Errorf("%s/%d: err = %v, want %v", tc.spec, tc.keyLen, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		plain := bytes.Repeat([]byte("sixteen byte blk"), 64) // two sectors
		buf := bytes.Clone(plain)
		cryptArea(c, buf, true)
		if bytes.Equal(buf[:512], plain[:512]) || bytes.Equal(buf[:512], buf[512:]) {
			t.Errorf("%s: sectors not encrypted with distinct IVs", tc.spec)
		}
		cryptArea(c, buf, false)
		if !bytes.Equal(buf, plain) {
			t.Errorf("%s: round trip failed", tc.spec)
		}
	}
}

func TestKeyslotLifecycle(t *testing.T) {
	dev, h := newMemImage(t, FormatOptions{})
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()

	slot, err := h.AddKeyslot(dev, vk, []byte("second"), fastArgon2id)
	if err != nil || slot != 1 {
		t.Fatalf("AddKeyslot = %d, %v", slot, err)
	}
	ks := h.Keyslots()
	if len(ks) != 2 || ks[1].AreaOffset != ks[0].AreaOffset+ks[0].AreaSize || ks[1].KDF != fastArgon2id || ks[1].Digest != 0 {
		t.Errorf("keyslots = %+v", ks)
	}
	// Not committed yet: the device still has one keyslot.
	if d, _ := Read(dev); len(d.Keyslots()) != 1 {
		t.Errorf("AddKeyslot committed the header")
	}
	id, err := h.AddToken(json.RawMessage(`{ "type": "kmsagent", "keyslots": ["1"] }`))
	if err != nil || id != 0 {
		t.Fatalf("AddToken = %d, %v", id, err)
	}
	if err := h.Write(dev); err != nil {
		t.Fatal(err)
	}
	h = mustRead(t, dev)
	got, slot, err := h.OpenAny(dev, []byte("second"))
	if err != nil || slot != 1 || !got.Equal(vk) {
		t.Fatalf("OpenAny(second) = %d, %v", slot, err)
	}
	got.Wipe()
	if tok, _ := h.Token(0); string(tok) != `{"type":"kmsagent","keyslots":["1"]}` {
		t.Errorf("token stored as %s", tok)
	}

	// Removing keyslot 1 wipes its area and drops it from the token.
	area := bytes.Clone(dev.data[ks[1].AreaOffset : ks[1].AreaOffset+ks[1].AreaSize])
	if err := h.RemoveKeyslot(dev, 1); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(area, dev.data[ks[1].AreaOffset:ks[1].AreaOffset+ks[1].AreaSize]) {
		t.Error("keyslot area not wiped")
	}
	h = mustRead(t, dev)
	if _, err := h.OpenKeyslot(dev, 1, []byte("second")); !errors.Is(err, ErrNoSuchKeyslot) {
		t.Errorf("removed keyslot: %v", err)
	}
	if tok, _ := h.Token(0); string(tok) != `{"type":"kmsagent","keyslots":[]}` {
		t.Errorf("token after removal: %s", tok)
	}
	if _, _, err := h.OpenAny(dev, []byte("second")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("OpenAny(removed passphrase) = %v", err)
	}
	if err := h.RemoveKeyslot(dev, 1); !errors.Is(err, ErrNoSuchKeyslot) {
		t.Errorf("second removal: %v", err)
	}
	// The freed area is reused.
	slot, err = h.AddKeyslot(dev, vk, []byte("third"), fastPBKDF2)
	if err != nil || slot != 1 || h.Keyslots()[1].AreaOffset != ks[1].AreaOffset {
		t.Errorf("re-add = %d, %v, %+v", slot, err, h.Keyslots())
	}
}

func mustRead(t *testing.T, dev *memDevice) *Header {
	t.Helper()
	h, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAddKeyslotErrors(t *testing.T) {
	dev, h := newMemImage(t, FormatOptions{})
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	wrong := hexKey(t, mdaVK+mdaVK)
	if _, err := h.AddKeyslot(dev, wrong, []byte("x"), fastPBKDF2); !errors.Is(err, ErrWrongVolumeKey) {
		t.Errorf("wrong volume key: %v", err)
	}
	for _, k := range []KDF{
		{Type: KDFPBKDF2, Hash: "sha256", Iterations: 999},
		{Type: KDFPBKDF2, Hash: "md5", Iterations: 1000},
		{Type: KDFArgon2id, Time: 3, MemoryKiB: 4096, CPUs: 1},
		{Type: KDFArgon2i, Time: 4, MemoryKiB: 16, CPUs: 1},
		{Type: KDFArgon2i, Time: 4, MemoryKiB: 4096, CPUs: 5},
		{Type: "scrypt"},
	} {
		if _, err := h.AddKeyslot(dev, vk, []byte("x"), k); err == nil {
			t.Errorf("KDF %+v accepted", k)
		}
	}
	if len(h.Keyslots()) != 1 {
		t.Errorf("failed additions left keyslots: %+v", h.Keyslots())
	}
}

func TestKeyslotAreaFull(t *testing.T) {
	// 1 MiB data offset: 1 MiB - 32 KiB of keyslot area holds three
	// 512-bit keyslots of 258048 bytes.
	dev, h := newMemImage(t, FormatOptions{DataOffset: 1 << 20})
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	for i := 1; i < 3; i++ {
		if _, err := h.AddKeyslot(dev, vk, []byte(strconv.Itoa(i)), fastPBKDF2); err != nil {
			t.Fatalf("keyslot %d: %v", i, err)
		}
	}
	if _, err := h.AddKeyslot(dev, vk, []byte("x"), fastPBKDF2); !errors.Is(err, ErrNoSpace) {
		t.Errorf("full keyslot area: %v", err)
	}
}

func TestAllKeyslotIDs(t *testing.T) {
	// 32 128-bit keyslots (65536-byte areas) fit a 4 MiB data offset; the
	// 33rd has no id left.
	dev, h := newMemImage(t, FormatOptions{DataOffset: 4 << 20, KeySize: 16, Cipher: "aes-cbc-essiv:sha256"})
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	for i := 1; i < MaxKeyslots; i++ {
		if _, err := h.AddKeyslot(dev, vk, []byte(fmt.Sprint(i)), fastPBKDF2); err != nil {
			t.Fatalf("keyslot %d: %v", i, err)
		}
	}
	if _, err := h.AddKeyslot(dev, vk, []byte("x"), fastPBKDF2); !errors.Is(err, ErrNoFreeKeyslot) {
		t.Errorf("33rd keyslot: %v", err)
	}
	if err := h.Write(dev); err != nil {
		t.Fatal(err)
	}
	h = mustRead(t, dev)
	got, err := h.OpenKeyslot(dev, 31, []byte("31"))
	if err != nil || !got.Equal(vk) {
		t.Fatalf("keyslot 31: %v", err)
	}
	got.Wipe()
}

func TestPriorityOrder(t *testing.T) {
	// The same passphrase in two keyslots: "prefer" wins, "ignore" is
	// never tried by OpenAny.
	dev, h := newMemImage(t, FormatOptions{})
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	if _, err := h.AddKeyslot(dev, vk, []byte("pass"), fastPBKDF2); err != nil {
		t.Fatal(err)
	}
	setPriority := func(slot, prio int) {
		keyslots, err := h.meta.section("keyslots")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := keyslots.get(strconv.Itoa(slot))
		o, err := parseObject(raw, "")
		if err != nil {
			t.Fatal(err)
		}
		o.set("priority", encodeValue(prio))
		keyslots.set(strconv.Itoa(slot), o.marshal())
		root := h.meta.root.clone()
		root.set("keyslots", keyslots.marshal())
		if err := h.replace(root); err != nil {
			t.Fatal(err)
		}
	}
	setPriority(1, 2)
	if _, slot, err := h.OpenAny(dev, []byte("pass")); err != nil || slot != 1 {
		t.Errorf("prefer: slot %d, %v", slot, err)
	}
	setPriority(0, 0)
	setPriority(1, 1)
	if _, slot, err := h.OpenAny(dev, []byte("pass")); err != nil || slot != 1 {
		t.Errorf("ignore: slot %d, %v", slot, err)
	}
	if _, err := h.OpenKeyslot(dev, 0, []byte("pass")); err != nil {
		t.Errorf("an ignored keyslot opens when asked for: %v", err)
	}
}

func TestTokens(t *testing.T) {
	dev, h := newMemImage(t, FormatOptions{})
	raw := json.RawMessage(`{"type":"kmsagent","keyslots":["0"],"unknown":{"deep":[true,null,1.5e3,"\u00e9\/"]}}`)
	if err := h.SetToken(4, raw); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id  int
		raw string
	}{
		{32, `{"type":"x","keyslots":[]}`},
		{-1, `{"type":"x","keyslots":[]}`},
		{1, `{"type":"x","keyslots":["3"]}`},
		{1, `{"keyslots":[]}`},
		{1, `{"type":"x"}`},
		{1, `{"type":"x","keyslots":[0]}`},
		{1, `{"type":"luks2-keyring","keyslots":[]}`},
		{1, `[]`},
		{1, `{"type":"x","keyslots":[]`},
	} {
		if err := h.SetToken(tc.id, json.RawMessage(tc.raw)); err == nil {
			t.Errorf("SetToken(%d, %s) accepted", tc.id, tc.raw)
		}
	}
	if err := h.Write(dev); err != nil {
		t.Fatal(err)
	}
	h = mustRead(t, dev)
	if got := h.Tokens(); len(got) != 1 || string(got[4]) != string(raw) {
		t.Errorf("Tokens = %v", got)
	}
	if ids := h.TokenIDs(); len(ids) != 1 || ids[0] != 4 {
		t.Errorf("TokenIDs = %v", ids)
	}
	if err := h.RemoveToken(4); err != nil {
		t.Fatal(err)
	}
	if err := h.RemoveToken(4); !errors.Is(err, ErrNoSuchToken) {
		t.Errorf("RemoveToken twice: %v", err)
	}
	if _, err := h.Token(4); !errors.Is(err, ErrNoSuchToken) {
		t.Errorf("Token after removal: %v", err)
	}
}

func TestRequirementsRefuseChanges(t *testing.T) {
	dev, h := newMemImage(t, FormatOptions{})
	cfg, err := h.meta.section("config")
	if err != nil {
		t.Fatal(err)
	}
	cfg.set("requirements", json.RawMessage(`{"mandatory":["offline-reencrypt"]}`))
	root := h.meta.root.clone()
	root.set("config", cfg.marshal())
	if err := h.replace(root); err != nil {
		t.Fatal(err)
	}
	if r := h.Requirements(); len(r) != 1 || r[0] != "offline-reencrypt" {
		t.Errorf("Requirements = %v", r)
	}
	vk, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatalf("opening is still allowed: %v", err)
	}
	defer vk.Wipe()
	if err := h.Write(dev); !errors.Is(err, ErrUnmetRequirements) {
		t.Errorf("Write: %v", err)
	}
	if _, err := h.AddKeyslot(dev, vk, []byte("x"), fastPBKDF2); !errors.Is(err, ErrUnmetRequirements) {
		t.Errorf("AddKeyslot: %v", err)
	}
	if err := h.RemoveKeyslot(dev, 0); !errors.Is(err, ErrUnmetRequirements) {
		t.Errorf("RemoveKeyslot: %v", err)
	}
	if err := h.SetToken(0, json.RawMessage(`{"type":"x","keyslots":[]}`)); !errors.Is(err, ErrUnmetRequirements) {
		t.Errorf("SetToken: %v", err)
	}
}

// Re-serialising a header we did not change keeps every byte of the JSON.
func TestRoundTripUnchanged(t *testing.T) {
	f := openFile(t, unxz(t, "luks2_valid_hdr.img.xz"))
	before := make([]byte, 0x4000)
	if _, err := f.ReadAt(before, 0); err != nil {
		t.Fatal(err)
	}
	h := readHeader(t, f)
	text, err := jsonText(before[binHeaderSize:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.JSON(), text) {
		t.Errorf("JSON differs from what was read:\n%s\n%s", text, h.JSON())
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	after := make([]byte, 0x4000)
	if _, err := f.ReadAt(after, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after[binHeaderSize:], before[binHeaderSize:]) {
		t.Error("JSON area changed on rewrite")
	}
	if binary := readHeader(t, f); binary.SeqID() != h.SeqID() {
		t.Errorf("seqid %d after rewrite", binary.SeqID())
	}
}

// TestPreparedKeyslot: a keyslot prepared before its passphrase is known
// opens as OpenKeyslot does, whether its area was read ahead whole or in
// part (the rest read by Open), and is opened once only.
func TestPreparedKeyslot(t *testing.T) {
	dev, h := newMemImage(t, FormatOptions{})
	want, err := h.OpenKeyslot(dev, 0, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Wipe()
	for _, tc := range []struct {
		name     string
		prefetch int
		pass     string
		err      error
	}{
		{"whole area", 1 << 20, "pass", nil},
		{"default", prefetchMax, "pass", nil},
		{"one chunk ahead", areaChunk, "pass", nil},
		{"one sector ahead", sectorSize, "pass", nil},
		{"wrong passphrase", 1 << 20, "wrong", ErrWrongPassphrase},
		{"wrong passphrase, part ahead", 3 * sectorSize, "wrong", ErrWrongPassphrase},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := h.prepareKeyslot(dev, 0, 0, tc.prefetch)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			vk, err := p.Open([]byte(tc.pass))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Open = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			p.Close() // must leave the returned key alone
			if !vk.Equal(want) {
				t.Error("volume key differs from OpenKeyslot's")
			}
			vk.Wipe()
			if _, err := p.Open([]byte(tc.pass)); err == nil {
				t.Error("second Open succeeded")
			}
		})
	}
	if _, err := h.PrepareKeyslot(dev, 7, 0); !errors.Is(err, ErrNoSuchKeyslot) {
		t.Errorf("PrepareKeyslot(7) = %v", err)
	}
	// A passphrase built in the keyslot's own room.
	p, err := h.PrepareKeyslot(dev, 0, len("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := p.PassphraseBuffer()
	if len(buf) != len("pass") {
		t.Fatalf("PassphraseBuffer is %d bytes", len(buf))
	}
	copy(buf, "pass")
	vk, err := p.Open(buf)
	if err != nil || !vk.Equal(want) {
		t.Fatalf("Open(PassphraseBuffer) = %v", err)
	}
	if vk.Len() != want.Len() {
		t.Errorf("volume key of %d bytes, want %d", vk.Len(), want.Len())
	}
	vk.Wipe()
	// Closed before it is opened.
	p, err = h.PrepareKeyslot(dev, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Open([]byte("pass")); err == nil {
		t.Error("Open after Close succeeded")
	}
}
