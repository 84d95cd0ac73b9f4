package service

import (
	"testing"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/initramfs"
	"kmsagent/agent/tstest"
)

// TestUnlockedElsewhere: a LUKS2 mapping cryptsetup made counts as a
// kmsagent volume when the initramfs noted unlocking it (same name and
// UUID) or its header has a kmsagent token; the note says by whom.
func TestUnlockedElsewhere(t *testing.T) {
	tstest.NeedRoot(t, "initramfs records count only when owned by root")
	dir := t.TempDir()
	const uuid = "0b7a3c4e-1111-4222-8333-944455556666"
	at := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	if err := initramfs.WriteRecord(dir, initramfs.Record{Name: "root_crypt", UUID: uuid, Provider: "aws", KeyID: "k-root", Time: at}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Config: config.Default(), InitramfsRecordDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      VolumeStatus
		want    bool
		wantBy  string
		wantAt  time.Time
		wantKey string
	}{
		{"noted by the initramfs, header unreadable", VolumeStatus{Name: "root_crypt", UUID: uuid}, true, "initramfs", at, "k-root"},
		{"noted, header read", VolumeStatus{Name: "root_crypt", UUID: uuid, KeyID: "k-header"}, true, "initramfs", at, "k-header"},
		{"note of another volume by that name", VolumeStatus{Name: "root_crypt", UUID: "11111111-1111-4222-8333-944455556666"}, false, "", time.Time{}, ""},
		{"kmsagent token, opened by cryptsetup", VolumeStatus{Name: "data", UUID: uuid, KeyID: "k-data"}, true, "cryptsetup", time.Time{}, "k-data"},
		{"not a kmsagent volume", VolumeStatus{Name: "swap", UUID: uuid}, false, "", time.Time{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.in
			if got := s.unlockedElsewhere(&v); got != tt.want || v.UnlockedBy != tt.wantBy || !v.UnlockedAt.Equal(tt.wantAt) || v.KeyID != tt.wantKey {
				t.Errorf("= %v, %+v", got, v)
			}
		})
	}
}
