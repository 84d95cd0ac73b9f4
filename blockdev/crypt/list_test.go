package crypt

import (
	"testing"

	"kmsagent/blockdev/dm"
)

func TestClassify(t *testing.T) {
	const luksUUID = "CRYPT-LUKS2-0b7a3c4e11114222833394445555666-root_crypt"
	crypt := func(params string) []dm.Target {
		return []dm.Target{{Type: dm.CryptTarget, Length: 8, Params: params}}
	}
	tests := []struct {
		name, uuid string
		tab        []dm.Target
		want       int
	}{
		{"ours", "CRYPT-LUKS2-0b7a3c4e111142228333944455556666-v", crypt("aes-xts-plain64 :64:logon:kmsagent:v 0 254:16 32768 1 sector_size:4096"), openerKmsagent},
		{"cryptsetup, key in the keyring", "CRYPT-LUKS2-0b7a3c4e111142228333944455556666-root_crypt",
			crypt("aes-xts-plain64 :64:logon:cryptsetup:0b7a3c4e-1111-4222-8333-944455556666-d0 0 254:0 32768 1 sector_size:4096"), openerCryptsetup},
		{"cryptsetup, inline key", "CRYPT-LUKS2-0b7a3c4e111142228333944455556666-root_crypt",
			crypt("aes-xts-plain64 " + zeros(128) + " 0 254:0 32768"), openerCryptsetup},
		{"plain dm-crypt", "CRYPT-PLAIN-swap", crypt("aes-xts-plain64 " + zeros(128) + " 0 254:0 0"), openerNone},
		{"LUKS1", "CRYPT-LUKS1-0b7a3c4e111142228333944455556666-old", crypt("aes-xts-plain64 " + zeros(128) + " 0 254:0 4096"), openerNone},
		{"LVM", "LVM-abc", []dm.Target{{Type: "linear", Length: 8, Params: "254:0 0"}}, openerNone},
		{"short uuid", luksUUID[:20], crypt("aes-xts-plain64 " + zeros(128) + " 0 254:0 4096"), openerNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := classify("x", tt.uuid, tt.tab); got != tt.want {
				t.Errorf("classify = %d, want %d", got, tt.want)
			}
		})
	}
}

func zeros(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0'
	}
	return string(b)
}
