package wire

import (
	"bytes"
	"encoding/json"
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
