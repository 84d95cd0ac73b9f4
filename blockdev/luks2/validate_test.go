package luks2

import (
	"errors"
	"strings"
	"testing"
)

// baseJSON is the metadata of cryptsetup's compatimage2 (16 KiB metadata).
const baseJSON = `{"keyslots":{"0":{"type":"luks2","key_size":16,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"65536","encryption":"aes-cbc-essiv:sha256","key_size":16},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1862,"salt":"Orln7DlfbPAkRqguyEbvCn8L7Lk1icFqlF9n8i+e+Fo="}},"1":{"type":"luks2","key_size":16,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"98304","size":"65536","encryption":"aes-cbc-essiv:sha256","key_size":16},"kdf":{"type":"argon2id","time":4,"memory":65536,"cpus":2,"salt":"c7vifSPdouqnRNRSteAJRheERfgQw5XFElBkQmOjwvs="}}},"tokens":{},"segments":{"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic","encryption":"aes-cbc-essiv:sha256","sector_size":512}},"digests":{"0":{"type":"pbkdf2","keyslots":["0","1"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"Uh24yMabeCcQJb8w9TPhNE4ytm7U4Bw8MVY82kb0uVY=","digest":"h9I9YIR8HOfAaIEojipEK68mCOkUmYj+31PdMahydRk="}},"config":{"json_size":"12288","keyslots_size":"4161536"}}`

func parseAndValidate(text string, hdrSize uint64) error {
	m, err := parseMetadata([]byte(text))
	if err != nil {
		return err
	}
	return m.validate(hdrSize)
}

func TestValidation(t *testing.T) {
	if err := parseAndValidate(baseJSON, 0x4000); err != nil {
		t.Fatalf("base header: %v", err)
	}
	tests := []struct {
		name     string
		old, new string
		want     string // in the error
	}{
		// keyslot areas
		{"overlapping areas", `"offset":"98304"`, `"offset":"65536"`, "overlaps keyslot 1 area"},
		{"area beyond keyslots_size", `"offset":"98304"`, `"offset":"4161536"`, "keyslots.1.area: [4161536, 4227072) overflows the keyslots area"},
		{"area end wraps", `"offset":"98304","size":"65536"`, `"offset":"98304","size":"18446744073709551615"`, "keyslots.1.area: offset 98304 + size 18446744073709551615 overflows 64 bits"},
		{"area inside metadata", `"offset":"32768"`, `"offset":"16384"`, "keyslots.0.area.offset: 16384 lies inside the metadata"},
		{"area misaligned", `"offset":"32768"`, `"offset":"33000"`, "keyslots.0.area.offset: 33000 is not aligned"},
		{"area size zero", `"offset":"32768","size":"65536"`, `"offset":"32768","size":"0"`, "keyslots.0.area.size: must not be zero"},
		{"area smaller than split key", `"offset":"32768","size":"65536"`, `"offset":"32768","size":"32768"`, "keyslots.0.area.size: 32768 is smaller"},
		{"area offset is a number", `"offset":"32768"`, `"offset":32768`, "keyslots.0.area.offset: is a number, want a string"},
		{"area offset negative", `"offset":"32768"`, `"offset":"-32768"`, "keyslots.0.area.offset"},
		{"area offset hex", `"offset":"32768"`, `"offset":"0x8000"`, "keyslots.0.area.offset"},
		{"area offset empty", `"offset":"32768"`, `"offset":""`, "keyslots.0.area.offset: is an empty string"},
		{"area offset overflows", `"offset":"32768"`, `"offset":"18446744073709551616"`, "out of range"},
		{"area type", `"type":"raw"`, `"type":"none"`, "keyslots.0.area.type"},
		{"area missing", `"area":{"type":"raw","offset":"32768","size":"65536","encryption":"aes-cbc-essiv:sha256","key_size":16},`, ``, "keyslots.0.area: missing"},
		{"area key_size missing", `"encryption":"aes-cbc-essiv:sha256","key_size":16}`, `"encryption":"aes-cbc-essiv:sha256"}`, "keyslots.0.area.key_size: missing"},
		// keyslots
		{"key_size fraction", `"key_size":16,"af"`, `"key_size":16.5,"af"`, "keyslots.0.key_size: 16.5 is not an integer"},
		{"key_size zero", `"key_size":16,"af"`, `"key_size":0,"af"`, "keyslots.0.key_size: must not be zero"},
		{"key_size string", `"key_size":16,"af"`, `"key_size":"16","af"`, "keyslots.0.key_size: is a string, want a number"},
		{"keyslot id too big", `"1":{"type":"luks2"`, `"32":{"type":"luks2"`, "keyslots.32: id must be below 32"},
		{"keyslot id not canonical", `"1":{"type":"luks2"`, `"01":{"type":"luks2"`, "keyslots.01: member name is not a number"},
		{"keyslot id not a number", `"1":{"type":"luks2"`, `"x":{"type":"luks2"`, "keyslots.x"},
		{"keyslot type missing", `"0":{"type":"luks2",`, `"0":{`, "keyslots.0.type: missing"},
		{"keyslot without digest", `"keyslots":["0","1"]`, `"keyslots":["0"]`, "keyslots.1: assigned to 0 digests"},
		{"af type", `"af":{"type":"luks1"`, `"af":{"type":"luks2"`, "keyslots.0.af.type"},
		{"af stripes missing", `"stripes":4000,`, ``, "keyslots.0.af.stripes: missing"},
		{"kdf iterations string", `"iterations":1862`, `"iterations":"1862"`, "keyslots.0.kdf.iterations: is a string"},
		{"kdf memory missing", `"memory":65536,`, ``, "keyslots.1.kdf.memory: missing"},
		{"kdf salt not base64", `"salt":"Orln7DlfbPAkRqguyEbvCn8L7Lk1icFqlF9n8i+e+Fo="`, `"salt":"@@"`, "keyslots.0.kdf.salt: not base64"},
		// segments
		{"segment over keyslot area", `"offset":"4194304"`, `"offset":"1048576"`, "config.keyslots_size: 4161536 does not fit"},
		{"segment over metadata", `"offset":"4194304"`, `"offset":"16384"`, "config.keyslots_size"},
		{"segment offset misaligned", `"offset":"4194304"`, `"offset":"4194305"`, "segments.0.offset: 4194305 is not aligned"},
		{"segment size misaligned", `"size":"dynamic"`, `"size":"1000"`, "segments.0.size: 1000 is not aligned"},
		{"segment end wraps", `"size":"dynamic"`, `"size":"18446744073705357312"`, "segments.0: offset 4194304 + size 18446744073705357312 overflows 64 bits"},
		{"segment end wraps at the top", `"offset":"4194304","iv_tweak":"0","size":"dynamic"`, `"offset":"18446744073709551104","iv_tweak":"0","size":"4096"`, "segments.0: offset 18446744073709551104 + size 4096 overflows 64 bits"},
		{"segment size zero", `"size":"dynamic"`, `"size":"0"`, "segments.0.size: must not be zero"},
		{"segment size word", `"size":"dynamic"`, `"size":"all"`, "segments.0.size"},
		{"segment size vs sector", `"size":"dynamic","encryption":"aes-cbc-essiv:sha256","sector_size":512`, `"size":"1536","encryption":"aes-cbc-essiv:sha256","sector_size":1024`, "segments.0.size: 1536 is not a multiple of the sector size 1024"},
		{"sector size 1000", `"sector_size":512`, `"sector_size":1000`, "segments.0.sector_size: 1000"},
		{"sector size 8192", `"sector_size":512`, `"sector_size":8192`, "segments.0.sector_size: 8192"},
		{"sector size 0", `"sector_size":512`, `"sector_size":0`, "segments.0.sector_size: 0"},
		{"sector size negative", `"sector_size":512`, `"sector_size":-512`, "segments.0.sector_size"},
		// cryptsetup refuses every empty string it checks.
		{"encryption empty", `"size":"dynamic","encryption":"aes-cbc-essiv:sha256"`, `"size":"dynamic","encryption":""`, "segments.0.encryption: is an empty string"},
		{"iv_tweak empty", `"iv_tweak":"0"`, `"iv_tweak":""`, "segments.0.iv_tweak: is an empty string"},
		{"segment type empty", `"segments":{"0":{"type":"crypt"`, `"segments":{"0":{"type":""`, "segments.0.type: is an empty string"},
		{"kdf hash empty", `"hash":"sha256","iterations":1862`, `"hash":"","iterations":1862`, "keyslots.0.kdf.hash: is an empty string"},
		{"area encryption empty", `"encryption":"aes-cbc-essiv:sha256","key_size":16}`, `"encryption":"","key_size":16}`, "keyslots.0.area.encryption: is an empty string"},
		{"token type empty", `"tokens":{}`, `"tokens":{"0":{"type":"","keyslots":[]}}`, "tokens.0.type: is an empty string"},
		// json-c, cryptsetup's parser, reads values nested 31 deep at most.
		{"JSON nested 32 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(30, "") + `}}`, "JSON values nest 32 levels deep"},
		{"scalar nested 32 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(29, "1") + `}}`, "JSON values nest 32 levels deep"},
		{"iv_tweak missing", `"iv_tweak":"0",`, ``, "segments.0.iv_tweak: missing"},
		{"encryption missing", `"size":"dynamic","encryption":"aes-cbc-essiv:sha256",`, `"size":"dynamic",`, "segments.0.encryption: missing"},
		{"segment gap", `"segments":{"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic"`,
			`"segments":{"2":{"type":"linear","offset":"8388608","size":"dynamic"},"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"4194304"`,
			"segments: gap at segment 1"},
		{"dynamic segment not last", `"segments":{"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic"`,
			`"segments":{"1":{"type":"linear","offset":"8388608","size":"dynamic"},"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic"`,
			"segments.0.size: only the last regular segment"},
		{"overlapping segments", `"segments":{"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic"`,
			`"segments":{"1":{"type":"linear","offset":"6291456","size":"dynamic"},"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"4194304"`,
			"segment 0 [4194304, 8388608) overlaps segment 1"},
		{"no segment", `"segments":{"0":{"type":"crypt","offset":"4194304","iv_tweak":"0","size":"dynamic","encryption":"aes-cbc-essiv:sha256","sector_size":512}}`, `"segments":{}`, "segments"},
		{"segment without digest", `"segments":["0"]`, `"segments":[]`, "segments.0: no digest"},
		// digests
		{"digest names missing keyslot", `"keyslots":["0","1"]`, `"keyslots":["0","1","7"]`, "digests.0.keyslots[2]: keyslot 7 does not exist"},
		{"digest names missing segment", `"segments":["0"]`, `"segments":["0","3"]`, "digests.0.segments[1]: segment 3 does not exist"},
		{"digest keyslot not a string", `"keyslots":["0","1"]`, `"keyslots":[0,"1"]`, "digests.0.keyslots[0]: is a number, want a string"},
		{"digest salt short", `"salt":"Uh24yMabeCcQJb8w9TPhNE4ytm7U4Bw8MVY82kb0uVY="`, `"salt":"Uh24yMabeCcQ"`, "digests.0.salt: is 9 bytes"},
		{"digest hash unknown", `"hash":"sha256","iterations":1000`, `"hash":"md5","iterations":1000`, "digests.0.hash"},
		// tokens
		{"token names missing keyslot", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":["4"]}}`, "tokens.0.keyslots[0]: keyslot 4 does not exist"},
		{"token without type", `"tokens":{}`, `"tokens":{"0":{"keyslots":["0"]}}`, "tokens.0.type: missing"},
		{"token without keyslots", `"tokens":{}`, `"tokens":{"0":{"type":"x"}}`, "tokens.0.keyslots: missing"},
		{"token id too big", `"tokens":{}`, `"tokens":{"32":{"type":"x","keyslots":[]}}`, "tokens.32: id must be below 32"},
		// config and structure
		{"json_size mismatch", `"json_size":"12288"`, `"json_size":"28672"`, "config.json_size: 28672 does not match"},
		{"keyslots_size unaligned", `"keyslots_size":"4161536"`, `"keyslots_size":"4161537"`, "config.keyslots_size: 4161537 is not a multiple of 4096"},
		{"keyslots_size too big", `"keyslots_size":"4161536"`, `"keyslots_size":"4165632"`, "config.keyslots_size: 4165632 does not fit"},
		{"config flags not strings", `"keyslots_size":"4161536"}`, `"keyslots_size":"4161536","flags":[1]}`, "config.flags[0]"},
		{"requirements not an object", `"keyslots_size":"4161536"}`, `"keyslots_size":"4161536","requirements":[]}`, "config.requirements: is a array"},
		{"missing tokens", `"tokens":{},`, ``, "tokens: missing"},
		{"missing config", `,"config":{"json_size":"12288","keyslots_size":"4161536"}`, ``, "config: missing"},
		{"section not an object", `"tokens":{}`, `"tokens":[]`, "tokens: is a array, want a object"},
		{"duplicate section", `"tokens":{}`, `"tokens":{},"tokens":{}`, "tokens: duplicate member"},
		{"duplicate field", `"iv_tweak":"0"`, `"iv_tweak":"0","iv_tweak":"1"`, "segments.0.iv_tweak: duplicate member"},
		{"trailing data", `"keyslots_size":"4161536"}}`, `"keyslots_size":"4161536"}} x`, "data after the JSON object"},
		{"malformed", `"tokens":{}`, `"tokens":{`, "malformed JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(baseJSON, tc.old) {
				t.Fatalf("base JSON lacks %q", tc.old)
			}
			text := strings.Replace(baseJSON, tc.old, tc.new, 1)
			err := parseAndValidate(text, 0x4000)
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.want)
			}
			if !errors.Is(err, ErrInvalidHeader) {
				t.Errorf("err = %v, not ErrInvalidHeader", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestValidationAccepts(t *testing.T) {
	// Things cryptsetup accepts that must not be refused.
	tests := []struct{ name, old, new string }{
		{"unknown keyslot member", `"0":{"type":"luks2",`, `"0":{"type":"luks2","vendor":{"x":1},`},
		{"unknown segment member", `"iv_tweak":"0",`, `"iv_tweak":"0","note":"kept",`},
		{"unknown top-level member", `"tokens":{}`, `"tokens":{},"extra":[1,2]`},
		{"foreign token", `"tokens":{}`, `"tokens":{"7":{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AAAA","tpm2-pcrs":[7]}}`},
		{"priority", `"0":{"type":"luks2",`, `"0":{"type":"luks2","priority":2,`},
		{"unknown kdf", `"type":"pbkdf2","hash":"sha256","iterations":1862`, `"type":"scrypt","n":1`},
		{"escaped slash", `"salt":"Orln7DlfbPAkRqguyEbvCn8L7Lk1icFqlF9n8i+e+Fo="`, `"salt":"Orln7DlfbPAkRqguyEbvCn8L7Lk1icFqlF9n8i+e+Fo\u003d"`},
		{"flags and requirements", `"keyslots_size":"4161536"}`, `"keyslots_size":"4161536","flags":["allow-discards"],"requirements":{"mandatory":[]}}`},
		{"fixed size segment", `"size":"dynamic"`, `"size":"1048576"`},
		{"4k sectors", `"sector_size":512`, `"sector_size":4096`},
		// Values of 2^63 and more are valid uint64s; readers compare them
		// against the device without converting to int64.
		{"segment size 2^63", `"size":"dynamic"`, `"size":"9223372036854775808"`},
		{"segment offset 2^63", `"offset":"4194304"`, `"offset":"9223372036854775808"`},
		{"segment ends at 2^64-1", `"offset":"4194304","iv_tweak":"0","size":"dynamic"`, `"offset":"18446744073709546496","iv_tweak":"0","size":"4608"`},
		{"iv_tweak 2^64-1", `"iv_tweak":"0"`, `"iv_tweak":"18446744073709551615"`},
		{"JSON nested 31 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(29, "") + `}}`},
		{"empty object nested 31 deep", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"n":` + nested(28, "{}") + `}}`},
		{"empty string in a token", `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"note":""}}`},
		// A detached header (cryptsetup --header): the data is elsewhere.
		{"data offset 0", `"offset":"4194304"`, `"offset":"0"`},
		{"whitespace", `"tokens":{}`, "\"tokens\" : { }\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(baseJSON, tc.old) {
				t.Fatalf("base JSON lacks %q", tc.old)
			}
			text := strings.Replace(baseJSON, tc.old, tc.new, 1)
			if err := parseAndValidate(text, 0x4000); err != nil {
				t.Fatalf("refused: %v", err)
			}
			// And it survives a round trip byte for byte.
			m, _ := parseMetadata([]byte(text))
			if got := string(m.root.marshal()); got != compactTopLevel(text) {
				t.Errorf("round trip changed the JSON:\n%s\n%s", text, got)
			}
		})
	}
}

// compactTopLevel strips the only whitespace the test cases add, which is
// between top-level members (kept inside values).
func compactTopLevel(s string) string {
	return strings.Replace(s, "\"tokens\" : { }\n", "\"tokens\":{ }", 1)
}

func TestJSONSizeLimit(t *testing.T) {
	// A header whose JSON does not fit (with its NUL) in the JSON area.
	big := strings.Replace(baseJSON, `"tokens":{}`, `"tokens":{"0":{"type":"x","keyslots":[],"pad":"`+strings.Repeat("a", 12300)+`"}}`, 1)
	err := parseAndValidate(big, 0x4000)
	if !errors.Is(err, ErrNoSpace) {
		t.Errorf("oversized JSON: err = %v, want ErrNoSpace", err)
	}
}

// nested returns n nested arrays around inner: the innermost array is n-1
// levels below the outermost.
func nested(n int, inner string) string {
	return strings.Repeat("[", n) + inner + strings.Repeat("]", n)
}

// TestSetTokenTooDeep: a change is held to the same limits as a header
// that is read, so no token makes a header cryptsetup cannot parse.
func TestSetTokenTooDeep(t *testing.T) {
	_, h := newMemImage(t, FormatOptions{})
	deep := `{"type":"x","keyslots":[],"n":` + nested(30, "") + `}`
	if err := h.SetToken(0, []byte(deep)); !errors.Is(err, ErrInvalidHeader) || !strings.Contains(err.Error(), "nest 32 levels deep") {
		t.Fatalf("SetToken of a token nested too deep: %v", err)
	}
	if err := h.SetToken(0, []byte(`{"type":"x","keyslots":[],"n":`+nested(29, "")+`}`)); err != nil {
		t.Fatalf("SetToken of a token nested 31 deep: %v", err)
	}
}

// reencryptJSON is baseJSON in the middle of an online reencryption as
// cryptsetup reencrypt --init-only records it: a reencrypt keyslot, the
// online-reencrypt-v2 requirement and the backup segments (the new key's
// keyslot and digest are left out).
var reencryptJSON = strings.NewReplacer(
	`}}},"tokens"`, `}},"2":{"type":"reencrypt","key_size":1,"mode":"reencrypt","direction":"forward","priority":0,"area":{"type":"checksum","offset":"163840","size":"4096","hash":"sha256","sector_size":4096}}},"tokens"`,
	`"sector_size":512}}`, `"sector_size":512},"1":{"type":"crypt","offset":"4194304","size":"dynamic","iv_tweak":"0","encryption":"aes-cbc-essiv:sha256","sector_size":512,"flags":["backup-previous"]},"2":{"type":"crypt","offset":"4194304","size":"dynamic","iv_tweak":"0","encryption":"aes-cbc-essiv:sha256","sector_size":512,"flags":["backup-final"]}}`,
	`"segments":["0"]`, `"segments":["0","1","2"]`,
	`"keyslots_size":"4161536"}`, `"keyslots_size":"4161536","requirements":{"mandatory":["online-reencrypt-v2"]}}`,
).Replace(baseJSON)

func TestReencryptKeyslotValidation(t *testing.T) {
	if err := parseAndValidate(reencryptJSON, 0x4000); err != nil {
		t.Fatalf("reencrypt header as cryptsetup writes it: %v", err)
	}
	tests := []struct{ name, old, new, want string }{
		{"key size", `"key_size":1,`, `"key_size":2,`, "keyslots.2.key_size: 2, want 1"},
		{"mode", `"mode":"reencrypt"`, `"mode":"x"`, `keyslots.2.mode: "x" is not`},
		{"mode missing", `"mode":"reencrypt",`, ``, "keyslots.2.mode: missing"},
		{"direction", `"direction":"forward"`, `"direction":"up"`, `keyslots.2.direction: "up" is not`},
		{"checksum without hash", `"hash":"sha256","sector_size":4096}`, `"sector_size":4096}`, "keyslots.2.area.hash: missing"},
		{"checksum sector size", `"hash":"sha256","sector_size":4096}`, `"hash":"sha256","sector_size":1000}`, "keyslots.2.area.sector_size: 1000"},
		{"datashift without shift", `"type":"checksum"`, `"type":"datashift"`, "keyslots.2.area.shift_size: missing"},
		{"datashift of 0", `"type":"checksum","offset":"163840","size":"4096"`, `"type":"datashift","shift_size":"0","offset":"163840","size":"4096"`, "keyslots.2.area.shift_size: 0"},
		{"no requirement", `"mandatory":["online-reencrypt-v2"]`, `"mandatory":[]`, "reencrypt keyslot without an online-reencrypt requirement"},
		{"two requirements", `"mandatory":["online-reencrypt-v2"]`, `"mandatory":["online-reencrypt-v2","online-reencrypt-v3"]`, "more than one online reencryption requirement"},
		{"requirement without keyslot", `,"2":{"type":"reencrypt"`, `,"9":{"type":"other"`, "online-reencrypt-v2 without a reencrypt keyslot"},
		{"no backup-final segment", `"flags":["backup-final"]`, `"flags":["backup-other"]`, "needs a backup-final and a backup-previous segment"},
		{"segment like no backup", `"iv_tweak":"0","size":"dynamic","encryption":"aes-cbc-essiv:sha256","sector_size":512}`, `"iv_tweak":"0","size":"dynamic","encryption":"aes-cbc-essiv:sha256","sector_size":4096}`, "segments.0: like neither"},
		{"second reencrypt keyslot", `"priority":0,"area":{"type":"checksum","offset":"163840","size":"4096","hash":"sha256","sector_size":4096}}`,
			`"priority":0,"area":{"type":"checksum","offset":"163840","size":"4096","hash":"sha256","sector_size":4096}},"3":{"type":"reencrypt","key_size":1,"mode":"reencrypt","direction":"forward","area":{"type":"none","offset":"167936","size":"4096"}}`,
			"keyslots.3: a second reencrypt keyslot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(reencryptJSON, tc.old) {
				t.Fatalf("JSON lacks %q", tc.old)
			}
			err := parseAndValidate(strings.Replace(reencryptJSON, tc.old, tc.new, 1), 0x4000)
			if !errors.Is(err, ErrInvalidHeader) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrInvalidHeader with %q", err, tc.want)
			}
		})
	}
}
