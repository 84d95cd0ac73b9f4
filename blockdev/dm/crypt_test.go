package dm

import (
	"strings"
	"testing"
)

func TestCryptParamsString(t *testing.T) {
	base := CryptParams{Cipher: "aes-xts-plain64", KeySize: 64, KeyType: "logon", KeyDesc: "kmsagent:test", Device: "/dev/vda"}
	tests := []struct {
		name string
		p    func(CryptParams) CryptParams
		want string
	}{
		{"plain", func(p CryptParams) CryptParams { return p }, "aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0"},
		{"offset", func(p CryptParams) CryptParams { p.Offset = 32768; p.IVOffset = 5; return p },
			"aes-xts-plain64 :64:logon:kmsagent:test 5 /dev/vda 32768"},
		{"discards", func(p CryptParams) CryptParams { p.AllowDiscards = true; return p },
			"aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0 1 allow_discards"},
		{"sector size", func(p CryptParams) CryptParams { p.SectorSize = 4096; return p },
			"aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0 1 sector_size:4096"},
		{"512 is the default", func(p CryptParams) CryptParams { p.SectorSize = 512; return p },
			"aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0"},
		{"all", func(p CryptParams) CryptParams {
			p.AllowDiscards, p.SectorSize, p.Extra = true, 4096, []string{"no_read_workqueue"}
			return p
		}, "aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0 3 allow_discards sector_size:4096 no_read_workqueue"},
	}
	for _, tt := range tests {
		p := tt.p(base)
		if got := p.String(); got != tt.want {
			t.Errorf("%s: String() = %q, want %q", tt.name, got, tt.want)
		}
		back, err := ParseCryptParams(tt.want)
		if err != nil {
			t.Errorf("%s: parse: %v", tt.name, err)
			continue
		}
		if back.String() != tt.want {
			t.Errorf("%s: round trip gives %q", tt.name, back.String())
		}
	}
}

func TestParseCryptParamsKernelForm(t *testing.T) {
	// As the kernel reports a table: device as major:minor.
	p, err := ParseCryptParams("aes-xts-plain64 :64:logon:kmsagent:test 0 254:0 4096 2 allow_discards sector_size:4096")
	if err != nil {
		t.Fatal(err)
	}
	want := CryptParams{Cipher: "aes-xts-plain64", KeySize: 64, KeyType: "logon", KeyDesc: "kmsagent:test",
		Device: "254:0", Offset: 4096, AllowDiscards: true, SectorSize: 4096}
	if p.String() != want.String() || p.InlineKey {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if p.KeyRef() != ":64:logon:kmsagent:test" {
		t.Errorf("KeyRef = %q", p.KeyRef())
	}
}

func TestParseCryptParamsInlineKey(t *testing.T) {
	hexKey := strings.Repeat("0123456789abcdef", 8)
	tests := []struct {
		params string
		inline bool
		ok     bool
	}{
		{"aes-xts-plain64 " + hexKey + " 0 /dev/vda 0", true, true},
		{"cipher_null-ecb - 0 /dev/vda 0", false, true},
		{"aes-xts-plain64 " + hexKey + " 0 /dev/vda", true, false},
	}
	for _, tt := range tests {
		p, err := ParseCryptParams(tt.params)
		if (err == nil) != tt.ok {
			t.Errorf("ParseCryptParams(%q): err = %v, want ok=%v", tt.params, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), hexKey) {
			t.Errorf("error message leaks the key: %v", err)
		}
		if err == nil && p.InlineKey != tt.inline {
			t.Errorf("ParseCryptParams(%q).InlineKey = %v", tt.params, p.InlineKey)
		}
		if strings.Contains(p.String(), hexKey) {
			t.Errorf("parsed params keep the key: %q", p.String())
		}
		if err == nil && tt.inline {
			if verr := p.Validate(); verr == nil {
				t.Error("Validate accepted an inline key")
			}
		}
	}
}

func TestParseCryptParamsRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda",
		"aes-xts-plain64 :64:logon 0 /dev/vda 0",
		"aes-xts-plain64 :x:logon:kmsagent:t 0 /dev/vda 0",
		"aes-xts-plain64 :0:logon:kmsagent:t 0 /dev/vda 0",
		"aes-xts-plain64 ::logon:kmsagent:t 0 /dev/vda 0",
		"aes-xts-plain64 :64::kmsagent:t 0 /dev/vda 0",
		"aes-xts-plain64 :64:logon: 0 /dev/vda 0",
		"aes-xts-plain64 :64:logon:kmsagent:t x /dev/vda 0",
		"aes-xts-plain64 :64:logon:kmsagent:t 0 /dev/vda -1",
		"aes-xts-plain64 :64:logon:kmsagent:t 0 /dev/vda 0 2 allow_discards",
		"aes-xts-plain64 :64:logon:kmsagent:t 0 /dev/vda 0 x",
		"aes-xts-plain64 :64:logon:kmsagent:t 0 /dev/vda 0 1 sector_size:big",
	} {
		if _, err := ParseCryptParams(s); err == nil {
			t.Errorf("ParseCryptParams(%q) accepted", s)
		}
	}
}

func TestCryptParamsValidate(t *testing.T) {
	good := CryptParams{Cipher: "aes-xts-plain64", KeySize: 64, KeyType: "logon", KeyDesc: "kmsagent:t", Device: "/dev/vda"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid params refused: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*CryptParams)
	}{
		{"no cipher", func(p *CryptParams) { p.Cipher = "" }},
		{"blank in device", func(p *CryptParams) { p.Device = "/dev/my disk" }},
		{"blank in desc", func(p *CryptParams) { p.KeyDesc = "kmsagent:a b" }},
		{"logon without prefix", func(p *CryptParams) { p.KeyDesc = "test" }},
		{"logon empty prefix", func(p *CryptParams) { p.KeyDesc = ":test" }},
		{"other key type", func(p *CryptParams) { p.KeyType = "trusted" }},
		{"zero key size", func(p *CryptParams) { p.KeySize = 0 }},
		{"odd sector size", func(p *CryptParams) { p.SectorSize = 1000 }},
		{"blank option", func(p *CryptParams) { p.Extra = []string{"a b"} }},
		{"inline key", func(p *CryptParams) { p.InlineKey = true }},
	}
	for _, tt := range tests {
		p := good
		tt.mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
		if _, err := p.Target(100); err == nil {
			t.Errorf("%s: Target accepted", tt.name)
		}
	}
	tg, err := good.Target(8192)
	if err != nil || tg.Type != CryptTarget || tg.Length != 8192 || tg.Params != good.String() {
		t.Errorf("Target = %+v, %v", tg, err)
	}
}

// TestLoadTableRefusesInlineKey checks the refusal happens before any
// ioctl, so it runs without device-mapper.
func TestLoadTableRefusesInlineKey(t *testing.T) {
	c := &Control{fd: -1}
	hexKey := strings.Repeat("ab", 64)
	_, err := c.LoadTable("test", []Target{{Length: 8, Type: "crypt", Params: "aes-xts-plain64 " + hexKey + " 0 /dev/vda 0"}}, false)
	if err == nil || !strings.Contains(err.Error(), "inline key") {
		t.Fatalf("err = %v, want an inline key refusal", err)
	}
	if strings.Contains(err.Error(), hexKey) {
		t.Fatal("error leaks the key")
	}
}

func TestKeyringOnly(t *testing.T) {
	ref := Target{Length: 8, Type: CryptTarget, Params: "aes-xts-plain64 :64:logon:kmsagent:t 0 254:0 0"}
	inline := Target{Start: 8, Length: 8, Type: CryptTarget, Params: "aes-xts-plain64 " + strings.Repeat("00", 64) + " 0 254:0 0"}
	linear := Target{Start: 16, Length: 8, Type: "linear", Params: "254:0 0"}
	tests := []struct {
		name    string
		targets []Target
		ok      bool
	}{
		{"reference", []Target{ref, linear}, true},
		{"inline key", []Target{ref, inline}, false},
		{"unparsable", []Target{{Length: 1, Type: CryptTarget, Params: "x"}}, false},
		{"no crypt", []Target{linear}, true},
	}
	for _, tt := range tests {
		err := KeyringOnly(tt.targets)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), strings.Repeat("00", 64)) {
			t.Errorf("%s: error leaks the key field", tt.name)
		}
	}
}
