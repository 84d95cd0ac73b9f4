package initramfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Backoff between rounds while the KMS cannot be reached: it doubles from
// FirstDelay up to MaxDelay and stays there.
const (
	FirstDelay = 2 * time.Second
	MaxDelay   = 30 * time.Second
)

// Options are Unlock's inputs besides the device and the KMS.
type Options struct {
	// Name is the volume's name in crypttab, for the messages.
	Name string
	// Console receives one line per failed round and the final refusal.
	Console io.Writer
	// Sleep waits between rounds; nil sleeps for real, ending early when
	// ctx ends.
	Sleep func(ctx context.Context, d time.Duration) error
	// Unreachable, if set, is called once, after the first round that
	// could not reach the KMS, with the volume's recovery keyslots (see
	// RecoveryKeyslots), so that the caller can offer the recovery
	// passphrase while Unlock keeps trying. Unlock stops when ctx ends.
	Unreachable func(recovery []int)
}

// RefusedError is a failure that retrying cannot fix. It says which KMS
// key refused (zero when the KMS was never asked, as for a damaged
// header) and which keyslots a recovery passphrase may open instead.
type RefusedError struct {
	Key      token.KMS
	Recovery []int // bound keyslots no kmsagent token uses
	Err      error
}

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Unlock returns the passphrase of dev's kmsagent keyslot, exactly the
// bytes cryptsetup reads from a keyscript. It retries with backoff for as
// long as the KMS is unreachable or throttling, writing one line to the
// console each round; anything else ends it with a *RefusedError. It
// also returns the KMS key that unwrapped it. The caller wipes the
// passphrase.
func Unlock(ctx context.Context, dev volume.Device, kms kmsclient.KMS, o Options) (*secret.Key, token.KMS, error) {
	sleep := o.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	delay := FirstDelay
	for round := 1; ; round++ {
		h, err := volume.ReadHeader(dev)
		if err != nil {
			return nil, token.KMS{}, &RefusedError{Err: err}
		}
		pass, cmk, err := volume.Passphrase(ctx, dev, kms)
		if err == nil {
			if round > 1 {
				fmt.Fprintf(o.Console, "kmsagent: %s: unlocked through the KMS (key %s) in round %d\n", o.Name, cmk.KeyID, round)
			}
			return pass, cmk, nil
		}
		if !kmsclient.Retryable(err) {
			return nil, cmk, &RefusedError{Key: cmk, Recovery: RecoveryKeyslots(h), Err: err}
		}
		fmt.Fprintf(o.Console, "kmsagent: %s: cannot reach the KMS for key %s (round %d): %v; trying again in %s\n", o.Name, cmk.KeyID, round, err, delay)
		if round == 1 && o.Unreachable != nil {
			o.Unreachable(RecoveryKeyslots(h))
		}
		if err := sleep(ctx, delay); err != nil {
			return nil, cmk, fmt.Errorf("stopped waiting for the KMS: %w", err)
		}
		delay = min(2*delay, MaxDelay)
	}
}

// Refusal is the console line for a *RefusedError, naming the key and
// what happens next.
func Refusal(name string, e *RefusedError) string {
	what := "cannot be unlocked through the KMS"
	if e.Key.KeyID != "" {
		what = fmt.Sprintf("the KMS refused key %s (%s)", e.Key.KeyID, e.Key.Provider)
		switch {
		case errors.Is(e.Err, kmsclient.ErrKeyDisabled):
			what += ": the key is disabled; enable it to boot"
		case errors.Is(e.Err, kmsclient.ErrKeyPendingDeletion):
			what += ": the key is pending deletion; cancel the deletion and enable it to boot"
		case errors.Is(e.Err, kmsclient.ErrKeyNotFound):
			what += ": the key does not exist"
		case errors.Is(e.Err, kmsclient.ErrAccessDenied):
			what += ": this instance's credential may not use it"
		}
	}
	next := "no recovery passphrase on this volume; the boot cannot go on"
	if len(e.Recovery) > 0 {
		next = "asking for the recovery passphrase"
	}
	return fmt.Sprintf("kmsagent: %s: %s (%v); %s", name, what, e.Err, next)
}

// RecoveryKeyslots lists the keyslots bound to the data segment that no
// kmsagent token uses: a recovery passphrase, or any other passphrase an
// admin added with cryptsetup.
func RecoveryKeyslots(h *luks2.Header) []int {
	used := map[int]bool{}
	for _, id := range h.TokenIDs() {
		raw, err := h.Token(id)
		if err != nil || token.TypeOf(raw) != token.Type {
			continue
		}
		if t, err := token.Parse(raw); err == nil {
			used[t.Keyslot] = true
		}
	}
	var out []int
	for _, ks := range h.Keyslots() {
		if ks.Bound && !used[ks.ID] {
			out = append(out, ks.ID)
		}
	}
	slices.Sort(out)
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
