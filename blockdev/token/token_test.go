package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"kmsagent/agent/secret"
)

const binding = "6b1c1c0e-8a3e-4b8e-9f8c-2c9a6f0d1e01"

func sample() *Token {
	return &Token{
		Keyslot:    1,
		KMS:        KMS{Provider: "huaweicloud", KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f", Region: "cn-north-4"},
		WrappedKey: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9},
		Binding:    binding,
	}
}

func TestMarshalLayout(t *testing.T) {
	raw, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"kmsagent","keyslots":["1"],"version":1,"kms":{"provider":"huaweicloud","key_id":"0d0466b0-e727-4d9c-b35d-f84bb474a37f","region":"cn-north-4"},"wrapped_key":"AQIDBAUGBwgJ","binding":"6b1c1c0e-8a3e-4b8e-9f8c-2c9a6f0d1e01"}`
	if string(raw) != want {
		t.Fatalf("got  %s\nwant %s", raw, want)
	}
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Keyslot != 1 || got.KMS != sample().KMS || !bytes.Equal(got.WrappedKey, sample().WrappedKey) || got.Binding != binding {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestParseRefuses(t *testing.T) {
	good := `{"type":"kmsagent","keyslots":["1"],"version":1,"kms":{"provider":"local","key_id":"k","region":""},"wrapped_key":"AQID","binding":"` + binding + `"}`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good token: %v", err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("test bug: %q not in the token", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	tests := []struct {
		name, raw, want string
	}{
		{"other type", edit(`"kmsagent"`, `"clevis"`), "type"},
		{"version 2", edit(`"version":1`, `"version":2`), "version 2"},
		{"version as string", edit(`"version":1`, `"version":"1"`), "version"},
		{"no keyslot", edit(`["1"]`, `[]`), "exactly one"},
		{"two keyslots", edit(`["1"]`, `["1","2"]`), "exactly one"},
		{"keyslot not decimal", edit(`["1"]`, `["01"]`), "keyslot id"},
		{"keyslot negative", edit(`["1"]`, `["-1"]`), "keyslot id"},
		{"keyslot too large", edit(`["1"]`, `["32"]`), "keyslot id"},
		{"keyslot number", edit(`["1"]`, `[1]`), "keyslots"},
		{"unknown member", edit(`"binding"`, `"extra":1,"binding"`), "unknown field"},
		{"unknown kms member", edit(`"region":""`, `"region":"","endpoint":"x"`), "unknown field"},
		{"duplicate member", edit(`"binding"`, `"binding":"`+binding+`","binding"`), "twice"},
		{"duplicate kms member", edit(`"key_id":"k"`, `"key_id":"k","key_id":"j"`), "twice"},
		{"missing region", edit(`,"region":""`, ``), "kms.region is missing"},
		{"missing binding", edit(`,"binding":"`+binding+`"`, ``), "binding is missing"},
		{"null kms", edit(`{"provider":"local","key_id":"k","region":""}`, `null`), "kms is missing"},
		{"kms not object", edit(`{"provider":"local","key_id":"k","region":""}`, `[]`), "wire.kms"},
		{"empty provider", edit(`"provider":"local"`, `"provider":""`), "provider is empty"},
		{"empty key id", edit(`"key_id":"k"`, `"key_id":""`), "key_id is empty"},
		{"control char", edit(`"key_id":"k"`, `"key_id":"k\n"`), "control character"},
		{"empty wrapped", edit(`"AQID"`, `""`), "wrapped_key is empty"},
		{"wrapped not base64", edit(`"AQID"`, `"AQ!D"`), "not base64"},
		{"wrapped url base64", edit(`"AQID"`, `"-_8="`), "not base64"},
		{"wrapped unpadded", edit(`"AQID"`, `"AQI"`), "not base64"},
		{"binding not uuid", edit(binding, "not-a-uuid"), "binding"},
		{"trailing data", good + `{}`, "after the JSON"},
		{"not object", `[]`, "cannot unmarshal array"},
		{"not json", `{`, "invalid"},
		{"too large", `{"x":"` + strings.Repeat("a", maxTokenSize) + `"}`, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.raw))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse: %v, want ErrInvalid with %q", err, tt.want)
			}
		})
	}
}

func TestMarshalRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Token)
	}{
		{"keyslot", func(t *Token) { t.Keyslot = 32 }},
		{"provider", func(t *Token) { t.KMS.Provider = "" }},
		{"key id", func(t *Token) { t.KMS.KeyID = "" }},
		{"region newline", func(t *Token) { t.KMS.Region = "a\nb" }},
		{"wrapped", func(t *Token) { t.WrappedKey = nil }},
		{"wrapped huge", func(t *Token) { t.WrappedKey = make([]byte, maxWrappedSize+1) }},
		{"binding", func(t *Token) { t.Binding = "x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := sample()
			tt.edit(tok)
			if _, err := tok.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Marshal: %v", err)
			}
		})
	}
}

func TestPassphrase(t *testing.T) {
	raw := bytes.Repeat([]byte{0xfb}, DataKeySize)
	want := base64.StdEncoding.EncodeToString(raw)
	k, err := secret.FromBytes(bytes.Clone(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	p, err := Passphrase(k)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wipe()
	if string(p.Bytes()) != want || len(want) != 44 {
		t.Fatalf("passphrase %q, want %q", p.Bytes(), want)
	}
	short, _ := secret.New(16)
	defer short.Wipe()
	if _, err := Passphrase(short); err == nil {
		t.Fatal("16-byte data key accepted")
	}
	if kdf := KDF(); kdf.Type != "pbkdf2" || kdf.Hash != "sha256" || kdf.Iterations != 1000 {
		t.Fatalf("KDF %+v", kdf)
	}
}

func TestImageToken(t *testing.T) {
	raw, err := Image{Size: 1<<63 + 5}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"type":"kmsagent-image","keyslots":[],"image_size":"9223372036854775813"}` {
		t.Fatalf("image token %s", raw)
	}
	im, err := ParseImage(raw)
	if err != nil || im.Size != 1<<63+5 {
		t.Fatalf("ParseImage: %v %v", im, err)
	}
	for _, bad := range []string{
		`{"type":"kmsagent-image","keyslots":["0"],"image_size":"1"}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":1}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":"01"}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":"-1"}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":"18446744073709551616"}`,
		`{"type":"kmsagent-image","keyslots":[]}`,
		`{"type":"kmsagent-image","keyslots":null,"image_size":"1"}`,
		`{"type":"kmsagent","keyslots":[],"image_size":"1"}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":"1","x":0}`,
		`{"type":"kmsagent-image","keyslots":[],"image_size":"1","image_size":"2"}`,
	} {
		if _, err := ParseImage([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseImage(%s): %v", bad, err)
		}
	}
}

func TestTypeOf(t *testing.T) {
	for raw, want := range map[string]string{
		`{"type":"kmsagent","keyslots":[]}`:        "kmsagent",
		`{"type":"systemd-tpm2","keyslots":["0"]}`: "systemd-tpm2",
		`{"type":5}`: "",
		`nonsense`:   "",
	} {
		if got := TypeOf([]byte(raw)); got != want {
			t.Errorf("TypeOf(%s) = %q, want %q", raw, got, want)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to a
// token that parses to the same value (no member is half understood).
func FuzzParse(f *testing.F) {
	good, _ := sample().Marshal()
	f.Add([]byte(good))
	im, _ := Image{Size: 12345}.Marshal()
	f.Add([]byte(im))
	f.Add([]byte(`{"type":"kmsagent","keyslots":["0"],"version":1,"kms":{"provider":"a","key_id":"b","region":""},"wrapped_key":"AA==","binding":"` + binding + `"}`))
	f.Add([]byte(`{"type":"kmsagent","keyslots":["0"],"keyslots":["1"]}`))
	f.Add([]byte(`{"a":{"b":[{"c":1,"c":2}]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if tok, err := Parse(raw); err == nil {
			again, err := tok.Marshal()
			if err != nil {
				t.Fatalf("accepted token does not marshal: %v", err)
			}
			tok2, err := Parse(again)
			if err != nil {
				t.Fatalf("re-encoded token refused: %v", err)
			}
			if tok2.Keyslot != tok.Keyslot || tok2.KMS != tok.KMS || !bytes.Equal(tok2.WrappedKey, tok.WrappedKey) || tok2.Binding != tok.Binding {
				t.Fatalf("round trip changed the token")
			}
			var m map[string]any
			if json.Unmarshal(raw, &m) != nil {
				t.Fatalf("Parse accepted invalid JSON")
			}
		}
		if im, err := ParseImage(raw); err == nil {
			again, _ := im.Marshal()
			if im2, err := ParseImage(again); err != nil || im2 != im {
				t.Fatalf("image token round trip: %v", err)
			}
		}
	})
}
