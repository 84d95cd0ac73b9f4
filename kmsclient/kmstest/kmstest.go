// Package kmstest is the conformance suite every KMS provider passes: the
// same round trips, binding checks, tamper checks and typed errors, run
// against the real backend of each provider (the embedded store, kms serve,
// local-kms).
package kmstest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// Harness gives the suite a provider and the admin operations it needs on
// the backend behind it.
type Harness struct {
	KMS kmsclient.KMS
	// NewKey creates an enabled CMK and returns the id the provider uses.
	NewKey func(t *testing.T) string
	// Disable, ScheduleDeletion and Rotate act on the backend directly.
	Disable          func(t *testing.T, keyID string)
	ScheduleDeletion func(t *testing.T, keyID string)
	// Rotate adds a key version; nil when the backend has no rotation.
	Rotate func(t *testing.T, keyID string)
	// MissingKeyID is a well-formed id of a key that does not exist.
	MissingKeyID string

	// Kinds that differ from the documented behaviour of the real service
	// because of the emulator under test; zero means the documented kind.
	DisabledDecryptKind error
	PendingDeletionKind error
	DataKeySizes        []int // defaults to 32 and 64
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const binding = "6b1c1c0e-8a3e-4b8e-9f8c-2c9a6f0d1e01"
	const otherBinding = "0f8d6c2a-1b2c-4d3e-8f4a-5b6c7d8e9f00"
	sizes := h.DataKeySizes
	if len(sizes) == 0 {
		sizes = []int{32, 64}
	}
	key := h.NewKey(t)

	t.Run("GenerateDecrypt", func(t *testing.T) {
		for _, size := range sizes {
			dk, err := h.KMS.GenerateDataKey(ctx, key, size, binding)
			if err != nil {
				t.Fatalf("generate %d bytes: %v", size, err)
			}
			if dk.Plaintext.Len() != size || len(dk.Wrapped) == 0 || dk.KeyID == "" {
				t.Fatalf("generate %d: plaintext %d bytes, wrapped %d bytes, key id %q", size, dk.Plaintext.Len(), len(dk.Wrapped), dk.KeyID)
			}
			got, err := h.KMS.Decrypt(ctx, dk.KeyID, dk.Wrapped, binding)
			if err != nil {
				t.Fatalf("decrypt: %v", err)
			}
			if !got.Equal(dk.Plaintext) {
				t.Fatalf("decrypt returned a different key")
			}
			got.Wipe()
			dk.Wipe()
		}
	})

	dk, err := h.KMS.GenerateDataKey(ctx, key, 32, binding)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	defer dk.Wipe()
	plainHex := hex.EncodeToString(dk.Plaintext.Bytes())
	noLeak := func(t *testing.T, err error) {
		t.Helper()
		if err != nil && strings.Contains(strings.ToLower(err.Error()), plainHex) {
			t.Fatalf("error message contains the plaintext key: %v", err)
		}
	}
	wantKind := func(t *testing.T, err, kind error) {
		t.Helper()
		noLeak(t, err)
		if !errors.Is(err, kind) {
			t.Fatalf("got error %v, want kind %q", err, kind)
		}
	}

	t.Run("EncryptGivenKey", func(t *testing.T) {
		in, err := secret.Random(32)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Wipe()
		wrapped, err := h.KMS.Encrypt(ctx, key, in, binding)
		if err != nil {
			t.Fatalf("encrypt: %v", err)
		}
		out, err := h.KMS.Decrypt(ctx, key, wrapped, binding)
		if err != nil {
			t.Fatalf("decrypt: %v", err)
		}
		defer out.Wipe()
		if !out.Equal(in) {
			t.Fatal("round trip changed the key")
		}
	})

	t.Run("WrongBinding", func(t *testing.T) {
		_, err := h.KMS.Decrypt(ctx, dk.KeyID, dk.Wrapped, otherBinding)
		wantKind(t, err, kmsclient.ErrInvalidCiphertext)
		_, err = h.KMS.Decrypt(ctx, dk.KeyID, dk.Wrapped, "")
		if err == nil {
			t.Fatal("decrypt with an empty binding succeeded")
		}
	})

	t.Run("Tampered", func(t *testing.T) {
		for name, mutate := range map[string]func([]byte) []byte{
			"flip-last":  func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
			"flip-mid":   func(b []byte) []byte { b[len(b)/2] ^= 0x80; return b },
			"truncated":  func(b []byte) []byte { return b[:len(b)-5] },
			"extended":   func(b []byte) []byte { return append(b, 0) },
			"first-byte": func(b []byte) []byte { b[0] ^= 0xff; return b },
		} {
			t.Run(name, func(t *testing.T) {
				w := mutate(bytes.Clone(dk.Wrapped))
				got, err := h.KMS.Decrypt(ctx, dk.KeyID, w, binding)
				if err == nil {
					got.Wipe()
					t.Fatal("tampered wrapped key decrypted")
				}
				wantKind(t, err, kmsclient.ErrInvalidCiphertext)
			})
		}
	})

	t.Run("UnknownKey", func(t *testing.T) {
		_, err := h.KMS.GenerateDataKey(ctx, h.MissingKeyID, 32, binding)
		wantKind(t, err, kmsclient.ErrKeyNotFound)
		_, err = h.KMS.DescribeKey(ctx, h.MissingKeyID)
		wantKind(t, err, kmsclient.ErrKeyNotFound)
	})

	t.Run("Describe", func(t *testing.T) {
		info, err := h.KMS.DescribeKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != kmsclient.KeyEnabled || info.ID == "" || info.Provider != h.KMS.Provider() {
			t.Fatalf("describe: %+v", info)
		}
	})

	t.Run("ReEncryptOtherKey", func(t *testing.T) {
		dst := h.NewKey(t)
		w2, err := h.KMS.ReEncrypt(ctx, dk.KeyID, dk.Wrapped, dst, binding)
		if err != nil {
			t.Fatalf("re-encrypt: %v", err)
		}
		got, err := h.KMS.Decrypt(ctx, dst, w2, binding)
		if err != nil {
			t.Fatalf("decrypt re-encrypted: %v", err)
		}
		defer got.Wipe()
		if !got.Equal(dk.Plaintext) {
			t.Fatal("re-encrypt changed the key")
		}
		_, err = h.KMS.ReEncrypt(ctx, dk.KeyID, dk.Wrapped, dst, otherBinding)
		wantKind(t, err, kmsclient.ErrInvalidCiphertext)
	})

	if h.Rotate != nil {
		t.Run("Rotate", func(t *testing.T) {
			k := h.NewKey(t)
			old, err := h.KMS.GenerateDataKey(ctx, k, 32, binding)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Wipe()
			h.Rotate(t, k)
			got, err := h.KMS.Decrypt(ctx, k, old.Wrapped, binding)
			if err != nil {
				t.Fatalf("old version no longer decrypts: %v", err)
			}
			got.Wipe()
			w2, err := h.KMS.ReEncrypt(ctx, k, old.Wrapped, k, binding)
			if err != nil {
				t.Fatalf("re-encrypt to current version: %v", err)
			}
			if bytes.Equal(w2, old.Wrapped) {
				t.Fatal("re-encrypt returned the same blob")
			}
			got, err = h.KMS.Decrypt(ctx, k, w2, binding)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Wipe()
			if !got.Equal(old.Plaintext) {
				t.Fatal("rotation re-encrypt changed the key")
			}
		})
	}

	t.Run("Disabled", func(t *testing.T) {
		k := h.NewKey(t)
		w, err := h.KMS.GenerateDataKey(ctx, k, 32, binding)
		if err != nil {
			t.Fatal(err)
		}
		w.Wipe()
		h.Disable(t, k)
		_, err = h.KMS.GenerateDataKey(ctx, k, 32, binding)
		wantKind(t, err, kmsclient.ErrKeyDisabled)
		kind := h.DisabledDecryptKind
		if kind == nil {
			kind = kmsclient.ErrKeyDisabled
		}
		_, err = h.KMS.Decrypt(ctx, k, w.Wrapped, binding)
		wantKind(t, err, kind)
		info, err := h.KMS.DescribeKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != kmsclient.KeyDisabled {
			t.Fatalf("state %q, want Disabled", info.State)
		}
	})

	t.Run("PendingDeletion", func(t *testing.T) {
		k := h.NewKey(t)
		h.ScheduleDeletion(t, k)
		kind := h.PendingDeletionKind
		if kind == nil {
			kind = kmsclient.ErrKeyPendingDeletion
		}
		_, err := h.KMS.GenerateDataKey(ctx, k, 32, binding)
		wantKind(t, err, kind)
		info, err := h.KMS.DescribeKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != kmsclient.KeyPendingDeletion {
			t.Fatalf("state %q, want PendingDeletion", info.State)
		}
	})
}
