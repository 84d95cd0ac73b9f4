package initramfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/local"
)

// flakyKMS fails the first outages Decrypt calls as unreachable, then
// passes them to the store.
type flakyKMS struct {
	*local.Store
	outages int
	calls   int
}

func (f *flakyKMS) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	f.calls++
	if f.calls <= f.outages {
		return nil, &kmsclient.Error{Provider: "local", Op: "Decrypt", Kind: kmsclient.ErrUnavailable, Message: "connection refused"}
	}
	return f.Store.Decrypt(ctx, keyID, wrapped, binding)
}

// newVolume formats a LUKS2 image with a KMS keyslot and, if recovery is
// set, a recovery passphrase keyslot.
func newVolume(t *testing.T, store *local.Store, keyID string, recovery []byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "root.img"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(17 << 20); err != nil {
		t.Fatal(err)
	}
	o := volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: keyID, RecoveryPassphrase: recovery,
		RecoveryKDF: luks2.KDF{Type: luks2.KDFArgon2id, Time: 4, MemoryKiB: 1024, CPUs: 1}}}
	if _, err := volume.Format(context.Background(), f, store, o); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestUnlock(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		outages    int
		disable    bool
		recovery   []byte
		wantSleeps []time.Duration
		wantLines  int    // console lines
		wantRefuse bool   // a *RefusedError
		wantInLine string // in the console output
	}{
		{name: "KMS answers at once", wantLines: 0},
		{name: "KMS comes back after outages", outages: 6,
			wantSleeps: []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second},
			wantLines:  7, wantInLine: "cannot reach the KMS for key"},
		{name: "disabled key, no recovery", disable: true, wantRefuse: true},
		{name: "disabled key with recovery", disable: true, recovery: []byte("correct horse"), wantRefuse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, keyID := tstest.LocalKMS(t, "root")
			dev := newVolume(t, store, keyID, tt.recovery)
			if tt.disable {
				if err := store.DisableKey(ctx, keyID); err != nil {
					t.Fatal(err)
				}
			}
			kms := &flakyKMS{Store: store, outages: tt.outages}
			var console bytes.Buffer
			var sleeps []time.Duration
			pass, cmk, err := Unlock(ctx, dev, kms, Options{Name: "root_crypt", Console: &console,
				Sleep: func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }})
			if !slices.Equal(sleeps, tt.wantSleeps) {
				t.Errorf("sleeps %v, want %v", sleeps, tt.wantSleeps)
			}
			if tt.wantRefuse {
				var refused *RefusedError
				if !errors.As(err, &refused) || !errors.Is(err, kmsclient.ErrKeyDisabled) {
					t.Fatalf("err = %v, want a refusal for a disabled key", err)
				}
				if refused.Key.KeyID != keyID {
					t.Errorf("refused key %q, want %q", refused.Key.KeyID, keyID)
				}
				if (len(refused.Recovery) > 0) != (tt.recovery != nil) {
					t.Errorf("recovery keyslots %v with recovery passphrase %q", refused.Recovery, tt.recovery)
				}
				msg := Refusal("root_crypt", refused)
				for _, want := range []string{"root_crypt", keyID, "disabled"} {
					if !strings.Contains(msg, want) {
						t.Errorf("refusal %q does not name %q", msg, want)
					}
				}
				if strings.Contains(msg, "asking for the recovery passphrase") != (tt.recovery != nil) {
					t.Errorf("refusal %q with recovery %q", msg, tt.recovery)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer pass.Wipe()
			if cmk.KeyID != keyID {
				t.Errorf("unwrapped by %q, want %q", cmk.KeyID, keyID)
			}
			// The passphrase must open the volume as cryptsetup would use it.
			vk, err := volume.OpenWithPassphrase(dev, pass.Bytes())
			if err != nil {
				t.Fatalf("the passphrase does not open the volume: %v", err)
			}
			vk.Wipe()
			lines := strings.Count(console.String(), "\n")
			if lines != tt.wantLines || !strings.Contains(console.String(), tt.wantInLine) {
				t.Errorf("console (%d lines, want %d with %q):\n%s", lines, tt.wantLines, tt.wantInLine, console.String())
			}
		})
	}
}

// TestUnlockUnreachableHook checks that Options.Unreachable is called
// once, after the first round that cannot reach the KMS, with the
// recovery keyslots, and not at all when the KMS answers at once.
func TestUnlockUnreachableHook(t *testing.T) {
	for _, tt := range []struct {
		name      string
		outages   int
		recovery  []byte
		wantCalls int
		wantSlots int
	}{
		{name: "KMS answers at once", recovery: []byte("pw"), wantCalls: 0},
		{name: "three outages, recovery keyslot", outages: 3, recovery: []byte("pw"), wantCalls: 1, wantSlots: 1},
		{name: "three outages, no recovery keyslot", outages: 3, wantCalls: 1, wantSlots: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, keyID := tstest.LocalKMS(t, "root")
			dev := newVolume(t, store, keyID, tt.recovery)
			calls, slots := 0, 0
			pass, _, err := Unlock(context.Background(), dev, &flakyKMS{Store: store, outages: tt.outages}, Options{
				Name: "root_crypt", Console: &bytes.Buffer{},
				Sleep:       func(context.Context, time.Duration) error { return nil },
				Unreachable: func(recovery []int) { calls++; slots = len(recovery) },
			})
			if err != nil {
				t.Fatal(err)
			}
			pass.Wipe()
			if calls != tt.wantCalls || slots != tt.wantSlots {
				t.Errorf("Unreachable called %d times with %d keyslots; want %d, %d", calls, slots, tt.wantCalls, tt.wantSlots)
			}
		})
	}
}

func TestUnlockStopsWithContext(t *testing.T) {
	store, keyID := tstest.LocalKMS(t, "root")
	dev := newVolume(t, store, keyID, nil)
	ctx, cancel := context.WithCancel(context.Background())
	kms := &flakyKMS{Store: store, outages: 1 << 30}
	_, _, err := Unlock(ctx, dev, kms, Options{Name: "root_crypt", Console: &bytes.Buffer{},
		Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestUnlockNotLUKS(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	store, _ := tstest.LocalKMS(t, "")
	_, _, err = Unlock(context.Background(), f, store, Options{Name: "x", Console: &bytes.Buffer{}})
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Key.KeyID != "" || len(refused.Recovery) != 0 {
		t.Fatalf("err = %#v, want a refusal without key", err)
	}
}
