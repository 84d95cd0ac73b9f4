package dm

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"test", true},
		{"data-vol_1.2", true},
		{"a:b", true},
		{strings.Repeat("n", 127), true},
		{strings.Repeat("n", 128), false},
		{"", false},
		{".", false},
		{"..", false},
		{"...", true},
		{"control", false},
		{"-vol", false},
		{"vol-", true},
		{"a/b", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"caf\xc3\xa9", false},
		{"del\x7f", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%.40q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\x00") {
			t.Errorf("error for %q is not one clean line: %q", tt.name, err)
		}
	}
}

func TestCryptUUID(t *testing.T) {
	const luks = "0d1f9b7e-3c4a-4f5e-8a6b-7c8d9e0f1a2b"
	tests := []struct {
		luks, name, want string
		ok               bool
	}{
		{luks, "test", "CRYPT-LUKS2-0d1f9b7e3c4a4f5e8a6b7c8d9e0f1a2b-test", true},
		{"0D1F9B7E-3C4A-4F5E-8A6B-7C8D9E0F1A2B", "v", "CRYPT-LUKS2-0D1F9B7E3C4A4F5E8A6B7C8D9E0F1A2B-v", true},
		{luks, strings.Repeat("n", 83), "CRYPT-LUKS2-0d1f9b7e3c4a4f5e8a6b7c8d9e0f1a2b-" + strings.Repeat("n", 83), true},
		{luks, strings.Repeat("n", 84), "", false},
		{luks, "bad/name", "", false},
		{"0d1f9b7e3c4a4f5e8a6b7c8d9e0f1a2b", "test", "", false},
		{"0d1f9b7e-3c4a-4f5e-8a6b-7c8d9e0f1a2", "test", "", false},
		{"0d1f9b7e-3c4a-4f5e-8a6b-7c8d9e0f1a2g", "test", "", false},
		{"0d1f9b7e_3c4a-4f5e-8a6b-7c8d9e0f1a2b", "test", "", false},
	}
	for _, tt := range tests {
		got, err := CryptUUID(tt.luks, tt.name)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("CryptUUID(%q, %.20q) = %q, %v; want %q ok=%v", tt.luks, tt.name, got, err, tt.want, tt.ok)
		}
		if err == nil && len(got) > MaxUUIDLen {
			t.Errorf("uuid %q longer than %d", got, MaxUUIDLen)
		}
	}
}

func TestValidateUUID(t *testing.T) {
	for _, tt := range []struct {
		uuid string
		ok   bool
	}{
		{"", true},
		{"CRYPT-LUKS2-abc-test", true},
		{strings.Repeat("u", 128), true},
		{strings.Repeat("u", 129), false},
		{"a b", false},
	} {
		if err := validateUUID(tt.uuid); (err == nil) != tt.ok {
			t.Errorf("validateUUID(%.20q) = %v, want ok=%v", tt.uuid, err, tt.ok)
		}
	}
}
