package wire

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSecretHex(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byte
		ok   bool
	}{
		{`"00ff10"`, []byte{0, 0xff, 0x10}, true},
		{`"00FF10"`, []byte{0, 0xff, 0x10}, true},
		{`""`, []byte{}, true},
		{`"0"`, nil, false},
		{`"zz"`, nil, false},
		{`"\u0030\u0030"`, nil, false},
		{`12`, nil, false},
		{`null`, nil, false},
		{`["00"]`, nil, false},
	} {
		var v struct {
			K SecretHex `json:"k"`
		}
		err := json.Unmarshal([]byte(`{"k":`+tc.in+`}`), &v)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && !bytes.Equal(v.K, tc.want) {
			t.Errorf("%s: got %x, want %x", tc.in, []byte(v.K), tc.want)
		}
	}
	if _, err := json.Marshal(struct{ K SecretHex }{SecretHex{1}}); err == nil {
		t.Error("marshalling SecretHex succeeded")
	}
}

func TestEncodeObject(t *testing.T) {
	out, err := EncodeObject(
		Member{Name: "key_id", String: `a"b`},
		Member{Name: "plain_text", Hex: [][]byte{{0xde, 0xad}, {0xbe, 0xef}}},
		Member{Name: "encryption_context", JSON: []byte(`{"binding":"x"}`)},
		Member{Name: "empty", Hex: [][]byte{}},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"key_id":"a\"b","plain_text":"deadbeef","encryption_context":{"binding":"x"},"empty":""}`
	if string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
	if _, err := EncodeObject(Member{Name: "x", JSON: []byte("{")}); err == nil {
		t.Fatal("invalid raw JSON accepted")
	}
}

func TestParseDecimal(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
		want   int
		ok     bool
	}{
		{"256", 8, 8192, 256, true},
		{"0", 0, 1, 0, true},
		{"8193", 8, 8192, 0, false},
		{"", 0, 10, 0, false},
		{"01", 0, 10, 0, false},
		{"+1", 0, 10, 0, false},
		{"-1", -5, 10, 0, false},
		{"1e3", 0, 10000, 0, false},
		{" 1", 0, 10, 0, false},
		{"99999999999", 0, 1 << 40, 0, false},
	} {
		got, ok := ParseDecimal(tc.in, tc.lo, tc.hi)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseDecimal(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSDKFixtures: the wire types hold every member of the SDK's request
// and response models (testdata/README.md), with the same names, and
// encode a request back to the same members.
func TestSDKFixtures(t *testing.T) {
	for name, v := range map[string]func() any{
		"create-datakey.request.json":                    func() any { return new(CreateDataKeyRequest) },
		"create-datakey.request.spec.json":               func() any { return new(CreateDataKeyRequest) },
		"create-datakey.request.all.json":                func() any { return new(CreateDataKeyRequest) },
		"decrypt-datakey.request.json":                   func() any { return new(DecryptDataKeyRequest) },
		"describe-key.request.json":                      func() any { return new(DescribeKeyRequest) },
		"create-datakey.response.json":                   func() any { return new(CreateDataKeyResponse) },
		"create-datakey-without-plaintext.response.json": func() any { return new(CreateDataKeyResponse) },
		"encrypt-datakey.response.json":                  func() any { return new(EncryptDataKeyResponse) },
		"decrypt-datakey.response.json":                  func() any { return new(DecryptDataKeyResponse) },
		"describe-key.response.json":                     func() any { return new(DescribeKeyResponse) },
		"error.kms.json":                                 func() any { return new(ErrorBody) },
	} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata/sdk", name))
			if err != nil {
				t.Fatal(err)
			}
			val := v()
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(val); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !strings.Contains(name, ".request") {
				return
			}
			out, err := json.Marshal(val)
			if err != nil {
				t.Fatal(err)
			}
			var want, got map[string]any
			json.Unmarshal(raw, &want)
			json.Unmarshal(out, &got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("re-encoded as %s\nwant %s", out, raw)
			}
		})
	}
}

func TestValidKeyID(t *testing.T) {
	for id, want := range map[string]bool{
		"0d0466b0-e727-4d9c-b35d-f84bb474a37f":  true,
		"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz":  true, // the service's pattern is [0-9a-z]
		"0D0466B0-E727-4D9C-B35D-F84BB474A37F":  false,
		"0d0466b0e727-4d9c-b35d-f84bb474a37f-":  false,
		"0d0466b0-e727-4d9c-b35d-f84bb474a37":   false,
		"0d0466b0-e727-4d9c-b35d-f84bb474a37f0": false,
		"alias/vol-keys":                        false,
		"":                                      false,
	} {
		if got := ValidKeyID(id); got != want {
			t.Errorf("ValidKeyID(%q) = %v, want %v", id, got, want)
		}
	}
}
