package image

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/crypto/xts"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/local"
)

var ctx = context.Background()

type fixture struct {
	kms *local.Store
	key string
	dir string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	s, key := tstest.LocalKMS(t, "images")
	return fixture{s, key, t.TempDir()}
}

func (f fixture) opts(sector int, size int64) EncryptOptions {
	return EncryptOptions{KMS: f.kms, KeyID: f.key, SectorSize: sector, InputSize: size}
}

func randomData(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// encryptToFile encrypts data into a new image file and returns its path.
func (f fixture) encryptToFile(t *testing.T, data []byte, sector int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.img")
	out, err := CreateOutput(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	res, err := EncryptFile(ctx, bytes.NewReader(data), out.File, f.opts(sector, -1))
	if err != nil {
		out.Abort()
		t.Fatal(err)
	}
	if err := out.Commit(); err != nil {
		t.Fatal(err)
	}
	if res.InputSize != int64(len(data)) || !res.SizeRecorded || res.PayloadSize%int64(sector) != 0 || res.PayloadSize-res.InputSize >= int64(sector) {
		t.Fatalf("result %+v for %d bytes", res, len(data))
	}
	return path
}

func decryptFile(t *testing.T, path string, o DecryptOptions) ([]byte, *Result) {
	t.Helper()
	img, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var out bytes.Buffer
	res, err := Decrypt(ctx, img, &out, o)
	if err != nil {
		t.Fatalf("Decrypt %s: %v", path, err)
	}
	return out.Bytes(), res
}

// decryptIntoFile decrypts the image at path with DecryptFile and returns
// what it wrote.
func decryptIntoFile(t *testing.T, path string, o DecryptOptions) []byte {
	t.Helper()
	img, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	back := filepath.Join(t.TempDir(), "back.raw")
	out, err := os.Create(back)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := DecryptFile(ctx, img, out, o); err != nil {
		t.Fatalf("DecryptFile %s: %v", path, err)
	}
	b, _ := os.ReadFile(back)
	return b
}

// TestRoundTrip: encrypt then decrypt gives the input byte for byte, for
// sizes on and off sector and chunk boundaries, both sector sizes, to a
// file (header last) from a stream and from an input read by offset, and
// to a stream (header first).
func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	sizes := []int{0, 1, 511, 512, 4095, 4096, 4097, 100000, chunkSize, chunkSize + 1, 2*chunkSize + 12345}
	for _, sector := range []int{512, 4096} {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%d/%d", sector, size), func(t *testing.T) {
				data := randomData(t, size)
				path := f.encryptToFile(t, data, sector)
				got, res := decryptFile(t, path, DecryptOptions{KMS: f.kms})
				if !bytes.Equal(got, data) || !res.SizeRecorded {
					t.Fatalf("file round trip: %d bytes back for %d (recorded %v)", len(got), size, res.SizeRecorded)
				}
				// Read by offset (the size known) and decrypted into a
				// file by offset.
				ppath := filepath.Join(t.TempDir(), "pos.img")
				out, err := CreateOutput(ppath, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := EncryptFile(ctx, bytes.NewReader(data), out.File, f.opts(sector, int64(size))); err != nil {
					t.Fatal(err)
				}
				if err := out.Commit(); err != nil {
					t.Fatal(err)
				}
				if got := decryptIntoFile(t, ppath, DecryptOptions{KMS: f.kms}); !bytes.Equal(got, data) {
					t.Fatalf("positional round trip: %d bytes back for %d", len(got), size)
				}
				if size%7 != 0 && size > 1 {
					return // the stream variant runs for a few sizes only
				}
				// The same through a stream with the size given up front.
				var stream bytes.Buffer
				sres, err := Encrypt(ctx, bytes.NewReader(data), &stream, f.opts(sector, int64(size)))
				if err != nil {
					t.Fatal(err)
				}
				if int64(stream.Len()) != 16<<20+sres.PayloadSize || len(sres.Warnings) != 0 {
					t.Fatalf("stream image is %d bytes, result %+v", stream.Len(), sres)
				}
				spath := filepath.Join(t.TempDir(), "stream.img")
				os.WriteFile(spath, stream.Bytes(), 0o600)
				got, _ = decryptFile(t, spath, DecryptOptions{KMS: f.kms})
				if !bytes.Equal(got, data) {
					t.Fatalf("stream round trip: %d bytes back for %d", len(got), size)
				}
			})
		}
	}
}

// TestIndependentDecrypt reads our payload with golang.org/x/crypto/xts
// and the exported key, sector by sector with the LUKS2 IV: the sector
// number in 512-byte units, so 8 apart for 4096-byte sectors.
func TestIndependentDecrypt(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, 3*4096+100)
	for _, sector := range []int{512, 4096} {
		plain := independentDecrypt(t, f, f.encryptToFile(t, data, sector), sector)
		if want := (len(data) + sector - 1) / sector * sector; len(plain) != want {
			t.Fatalf("payload %d bytes", len(plain))
		}
		if !bytes.Equal(plain[:len(data)], data) || !bytes.Equal(plain[len(data):], make([]byte, len(plain)-len(data))) {
			t.Fatalf("sector size %d: x/crypto/xts with 512-byte IV units does not decrypt our payload", sector)
		}
	}
}

// independentDecrypt decrypts the payload of the image at path with
// golang.org/x/crypto/xts and the exported key.
func independentDecrypt(t *testing.T, f fixture, path string, sector int) []byte {
	t.Helper()
	img, _ := os.Open(path)
	vk, err := volume.ExportKey(ctx, img, f.kms, nil)
	img.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := xts.NewCipher(aes.NewCipher, vk.Bytes())
	vk.Wipe()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	payload := raw[16<<20:]
	plain := make([]byte, len(payload))
	for k := 0; k < len(payload)/sector; k++ {
		c.Decrypt(plain[k*sector:(k+1)*sector], payload[k*sector:(k+1)*sector], uint64(k*sector/512))
	}
	return plain
}

func TestStreamUnknownSize(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		size int
		warn bool
	}{{8192, false}, {8191, true}} {
		data := randomData(t, tt.size)
		var out bytes.Buffer
		res, err := Encrypt(ctx, io.MultiReader(bytes.NewReader(data)), &out, f.opts(4096, -1))
		if err != nil {
			t.Fatal(err)
		}
		if res.SizeRecorded || (len(res.Warnings) > 0) != tt.warn {
			t.Fatalf("size %d: %+v", tt.size, res)
		}
		path := filepath.Join(t.TempDir(), "img")
		os.WriteFile(path, out.Bytes(), 0o600)
		got, _ := decryptFile(t, path, DecryptOptions{KMS: f.kms})
		want := append(bytes.Clone(data), make([]byte, (4096-tt.size%4096)%4096)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d: decrypt gave %d bytes", tt.size, len(got))
		}
	}
	// A size given up front that the input does not keep is an error.
	if _, err := Encrypt(ctx, bytes.NewReader(make([]byte, 10)), io.Discard, f.opts(512, 11)); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("short input: %v", err)
	}
}

func TestEncryptKMSFailureWritesNothing(t *testing.T) {
	f := newFixture(t)
	var out bytes.Buffer
	o := f.opts(4096, 3)
	o.KeyID = "missing"
	if _, err := Encrypt(ctx, strings.NewReader("abc"), &out, o); !errors.Is(err, kmsclient.ErrKeyNotFound) || out.Len() != 0 {
		t.Fatalf("Encrypt: %v, %d bytes written", err, out.Len())
	}
	path := filepath.Join(t.TempDir(), "x.img")
	fo, _ := CreateOutput(path, 0o644)
	if _, err := EncryptFile(ctx, strings.NewReader("abc"), fo.File, o); err == nil {
		t.Fatal("EncryptFile with a missing key")
	}
	fo.Abort()
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if _, err := CreateOutput(f.encryptToFile(t, []byte("x"), 512), 0o644); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("existing output: %v", err)
	}
}

func TestDecryptRefusals(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, 10000)
	path := f.encryptToFile(t, data, 4096)
	raw, _ := os.ReadFile(path)
	write := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	other := newFixture(t)
	tests := []struct {
		name string
		path string
		o    DecryptOptions
		want error
		text string
	}{
		{"not luks", write("zero", make([]byte, 17<<20)), DecryptOptions{KMS: f.kms}, luks2.ErrNotLUKS2, "not a LUKS2"},
		{"truncated", write("short", raw[:1<<20]), DecryptOptions{KMS: f.kms}, nil, "truncated"},
		{"wrong passphrase", path, DecryptOptions{Passphrase: []byte("guess")}, luks2.ErrWrongPassphrase, "opens no keyslot"},
		{"other KMS", path, DecryptOptions{KMS: other.kms}, kmsclient.ErrKeyNotFound, "unwrap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, _ := os.Open(tt.path)
			defer img.Close()
			var out bytes.Buffer
			_, err := Decrypt(ctx, img, &out, tt.o)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) || out.Len() != 0 {
				t.Fatalf("Decrypt: %v (%d bytes out), want %v with %q", err, out.Len(), tt.want, tt.text)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	f := newFixture(t)
	path := f.encryptToFile(t, randomData(t, 5000), 4096)
	img, _ := os.Open(path)
	defer img.Close()
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if info.Segment.Cipher != "aes-xts-plain64" || info.Segment.KeyBits != 512 || info.Segment.SectorSize != 4096 ||
		info.Segment.PayloadSize != 8192 || info.Segment.ImageSize == nil || *info.Segment.ImageSize != 5000 || info.Segment.Size != "dynamic" {
		t.Fatalf("segment %+v", info.Segment)
	}
	if len(info.Keyslots) != 1 || info.Keyslots[0].KDF.Type != "pbkdf2" || len(info.Keyslots[0].Tokens) != 1 {
		t.Fatalf("keyslots %+v", info.Keyslots)
	}
	if len(info.Tokens) != 2 || info.Tokens[0].Type != token.Type || info.Tokens[0].KeyID != f.key || info.Tokens[0].BindingMatches == nil || !*info.Tokens[0].BindingMatches ||
		info.Tokens[1].Type != token.ImageType || *info.Tokens[1].ImageSize != 5000 {
		t.Fatalf("tokens %+v", info.Tokens)
	}
	// No key material, not even the wrapped key, in either form.
	h, _ := volume.ReadHeader(img)
	raw, _ := h.Token(0)
	tok, _ := token.Parse(raw)
	js, _ := json.Marshal(info)
	var text bytes.Buffer
	info.WriteText(&text)
	for _, out := range []string{string(js), text.String()} {
		if strings.Contains(out, base64.StdEncoding.EncodeToString(tok.WrappedKey)) || strings.Contains(out, "salt") || strings.Contains(out, "digest\"") {
			t.Fatalf("inspect shows key material:\n%s", out)
		}
	}
	if !strings.Contains(text.String(), "raw image 5000 bytes") || !strings.Contains(text.String(), "local key "+f.key) {
		t.Fatalf("text:\n%s", text.String())
	}
}

func secretFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCryptsetupAcceptsImage: our images pass luksDump, open with the
// exported volume key, and export the size token.
func TestCryptsetupAcceptsImage(t *testing.T) {
	tstest.NeedCryptsetup(t)
	f := newFixture(t)
	for _, sector := range []int{512, 4096} {
		path := f.encryptToFile(t, randomData(t, 70000), sector)
		dump := tstest.MustCryptsetup(t, "luksDump", path)
		if !strings.Contains(dump, fmt.Sprintf("sector: %d [bytes]", sector)) || !strings.Contains(dump, "kmsagent-image") {
			t.Fatalf("luksDump:\n%s", dump)
		}
		img, _ := os.Open(path)
		vk, err := volume.ExportKey(ctx, img, f.kms, nil)
		img.Close()
		if err != nil {
			t.Fatal(err)
		}
		tstest.MustCryptsetup(t, "open", "--test-passphrase", "--volume-key-file", secretFile(t, vk.Bytes()), path)
		vk.Wipe()
		if out := tstest.MustCryptsetup(t, "token", "export", "--token-id", "1", path); !strings.Contains(out, `"image_size":"70000"`) {
			t.Fatalf("token export: %s", out)
		}
	}
}

// TestCryptsetupOfflineEncrypt proves the payload format against
// cryptsetup's own encryption: cryptsetup encrypts a file in place
// (offline reencryption, no device-mapper), and we decrypt it with the
// passphrase. This is what pins the IV unit of 4096-byte sectors.
func TestCryptsetupOfflineEncrypt(t *testing.T) {
	tstest.NeedCryptsetup(t)
	for _, sector := range []string{"512", "4096"} {
		t.Run(sector, func(t *testing.T) {
			plain := randomData(t, 3<<20)
			path := filepath.Join(t.TempDir(), "disk.img")
			// Room for the header cryptsetup moves the data to make.
			if err := os.WriteFile(path, append(bytes.Clone(plain), make([]byte, 16<<20)...), 0o600); err != nil {
				t.Fatal(err)
			}
			pass := secretFile(t, []byte("offline\n"))
			tstest.MustCryptsetup(t, "reencrypt", "--encrypt", "--type", "luks2", "--force-offline-reencrypt", "--sector-size", sector,
				"--reduce-device-size", "16M", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass, path)
			got, res := decryptFile(t, path, DecryptOptions{Passphrase: []byte("offline\n")})
			if res.SizeRecorded || len(got) < len(plain) || !bytes.Equal(got[:len(plain)], plain) {
				t.Fatalf("cryptsetup-encrypted payload: %d bytes, first differ at %d", len(got), firstDiff(got, plain))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestPipelineCancel(t *testing.T) {
	f := newFixture(t)
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	o := f.opts(4096, -1)
	o.Progress = func(int64) {
		if n++; n == 2 {
			cancel()
		}
	}
	_, err := Encrypt(cctx, io.LimitReader(zeroReader{}, 64<<20), io.Discard, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Encrypt: %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestWriteErrorStops(t *testing.T) {
	f := newFixture(t)
	w := &failingWriter{after: 16<<20 + chunkSize}
	_, err := Encrypt(ctx, io.LimitReader(zeroReader{}, 64<<20), w, f.opts(4096, 64<<20))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Encrypt: %v", err)
	}
}

type failingWriter struct{ after, n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.after {
		return 0, errors.New("disk full")
	}
	w.n += len(p)
	return len(p), nil
}

// editHeaderJSON replaces old by new in the JSON of both header copies of
// the image at path and fixes their checksums, as a damaged or hostile
// header that is otherwise well formed would look.
func editHeaderJSON(t *testing.T, path, old, new string) {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hdrSize := int(binary.BigEndian.Uint64(img[8:16]))
	for _, off := range []int{0, hdrSize} {
		area := img[off+4096 : off+hdrSize]
		text := string(area[:bytes.IndexByte(area, 0)])
		if !strings.Contains(text, old) {
			t.Fatalf("header JSON lacks %q:\n%s", old, text)
		}
		clear(area)
		copy(area, strings.Replace(text, old, new, 1))
		clear(img[off+448 : off+512])
		sum := sha256.Sum256(img[off : off+hdrSize])
		copy(img[off+448:], sum[:])
	}
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHugeSegmentValues: segment offsets and sizes are unsigned 64-bit;
// values of 2^63 and more are refused with a clear error, never turned
// into negative lengths and an empty, successful decrypt, and a data
// segment over the header is refused as cryptsetup refuses to activate
// it.
func TestHugeSegmentValues(t *testing.T) {
	f := newFixture(t)
	data := randomData(t, 10000)
	orig, err := os.ReadFile(f.encryptToFile(t, data, 4096))
	if err != nil {
		t.Fatal(err)
	}
	const seg = `"offset":"16777216","size":"dynamic"`
	tests := []struct {
		name, new string
		err       error  // from both Decrypt and Inspect; nil: Inspect works
		text      string // in the Decrypt error and the Inspect warning
	}{
		{"size 2^63", `"offset":"16777216","size":"9223372036854775808"`, nil, "the segment is 9223372036854775808 bytes but the image holds only 12288 after the header"},
		{"size 2^64-4096", `"offset":"16777216","size":"18446744073709547520"`, luks2.ErrInvalidHeader, "overflows 64 bits"},
		{"offset 2^63", `"offset":"9223372036854775808","size":"dynamic"`, nil, "shorter than its 9223372036854775808-byte header"},
		{"offset 2^64-4096", `"offset":"18446744073709547520","size":"dynamic"`, nil, "shorter than its 18446744073709547520-byte header"},
		{"offset 0", `"offset":"0","size":"dynamic"`, luks2.ErrHeaderOverlap, "segment 0 starts at offset 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(path, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			editHeaderJSON(t, path, seg, tt.new)
			img, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			var out bytes.Buffer
			_, err = Decrypt(ctx, img, &out, DecryptOptions{KMS: f.kms})
			if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) || !strings.Contains(err.Error(), tt.text) || out.Len() != 0 {
				t.Fatalf("Decrypt: %v (%d bytes out), want an error with %q", err, out.Len(), tt.text)
			}
			info, err := Inspect(img)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Inspect: %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Segment.PayloadSize != 0 || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], tt.text) {
				t.Fatalf("Inspect: payload %d, warnings %q; want 0 and %q", info.Segment.PayloadSize, info.Warnings, tt.text)
			}
			var text bytes.Buffer
			info.WriteText(&text)
			if strings.Contains(text.String(), "Payload:       -") {
				t.Fatalf("negative payload:\n%s", text.String())
			}
		})
	}
}

// TestInspectEscapesHeaderText: the label and subsystem are any bytes;
// inspect prints control characters and malformed UTF-8 escaped, never
// raw to the terminal.
func TestInspectEscapesHeaderText(t *testing.T) {
	f := newFixture(t)
	path := f.encryptToFile(t, randomData(t, 5000), 4096)
	img, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	h, err := volume.ReadHeader(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SetLabel("data\x1b[2J\x1b]0;owned\x07", "sub\r\xffsystem"); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(img); err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	info.WriteText(&text)
	out := text.String()
	for _, want := range []string{`Label:         "data\x1b[2J\x1b]0;owned\a"`, `Subsystem:     "sub\r\xffsystem"`} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %s:\n%s", want, out)
		}
	}
	for _, c := range out {
		if c != '\n' && !unicode.IsPrint(c) {
			t.Fatalf("text holds the raw character %q:\n%q", c, out)
		}
	}
	js, _ := json.Marshal(info)
	if bytes.ContainsAny(js, "\x1b\x07\r") {
		t.Fatalf("JSON holds a raw control character: %s", js)
	}
}
