package huaweicloud

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmstest"
)

const (
	keyA = "0d0466b0-e727-4d9c-b35d-f84bb474a37f"
	keyB = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
)

// TestConformance runs the provider suite against the fake KMS with both
// places for the binding.
func TestConformance(t *testing.T) {
	for _, field := range []string{AADFieldAdditional, AADFieldContext} {
		t.Run(field, func(t *testing.T) {
			f := newFakeKMS(t)
			cfg := staticConfig(t, f)
			cfg.AADField = field
			n := 0
			kmstest.Run(t, kmstest.Harness{
				KMS: newTestClient(t, cfg),
				NewKey: func(t *testing.T) string {
					n++
					id := fmt.Sprintf("3f1b6c9e-0000-4000-8000-%012d", n)
					f.addKey(id)
					return id
				},
				Disable:          func(t *testing.T, id string) { f.setState(id, wire.KeyStateDisabled) },
				ScheduleDeletion: func(t *testing.T, id string) { f.setState(id, wire.KeyStatePendingDeletion) },
				MissingKeyID:     "3f1b6c9e-ffff-4000-8000-000000000000",
			})
		})
	}
}

// TestWireRequests checks what the server receives for each operation.
func TestWireRequests(t *testing.T) {
	for _, field := range []string{"", AADFieldAdditional, AADFieldContext} {
		t.Run("aad_field="+field, func(t *testing.T) {
			f := newFakeKMS(t)
			f.addKey(keyA)
			f.addKey(keyB)
			cfg := staticConfig(t, f)
			cfg.AADField = field
			c := newTestClient(t, cfg)
			ctx := t.Context()
			checkBinding := func(t *testing.T, r received) {
				t.Helper()
				aad, hasAAD := r.body["additional_authenticated_data"]
				ec, hasEC := r.body["encryption_context"]
				if field == AADFieldContext {
					if hasAAD || !hasEC || string(ec) != `{"binding":"`+testBinding+`"}` {
						t.Errorf("%s: additional_authenticated_data %s, encryption_context %s; want only the context", r.op, aad, ec)
					}
					return
				}
				if !hasAAD || hasEC || r.str("additional_authenticated_data") != testBinding {
					t.Errorf("%s: additional_authenticated_data %s, encryption_context %s; want only the aad", r.op, aad, ec)
				}
			}
			checkCommon := func(t *testing.T, r received, op string) {
				t.Helper()
				if r.op != op || r.accessKey != testAK || r.token != "" {
					t.Errorf("request %s signed by %q token %q, want %s by %s", r.op, r.accessKey, r.token, op, testAK)
				}
				if got := r.header.Get(wire.HeaderProjectID); got != testProject {
					t.Errorf("%s: X-Project-Id %q", op, got)
				}
				if got := r.header.Get("Content-Type"); got != wire.ContentType {
					t.Errorf("%s: Content-Type %q", op, got)
				}
				// The headers the SDK signs, and not host, which a proxy
				// may rewrite; plus our nonce, which makes two identical
				// requests in one second (X-Sdk-Date's resolution) sign
				// differently, so that a server refusing replays (kms
				// serve) accepts both. Huawei's gateway verifies whatever
				// SignedHeaders lists.
				auth := r.header.Get("Authorization")
				if !strings.Contains(auth, " SignedHeaders=user-agent;x-project-id;x-sdk-date;x-sdk-nonce, ") {
					t.Errorf("%s: signed headers in %s, want user-agent;x-project-id;x-sdk-date;x-sdk-nonce", op, auth)
				}
				if r.str("key_id") == "" {
					t.Errorf("%s: no key_id", op)
				}
			}

			dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Wipe()
			r := f.last(t)
			checkCommon(t, r, wire.OpCreateDataKey)
			checkBinding(t, r)
			if r.str("datakey_length") != "256" || r.str("key_id") != keyA {
				t.Errorf("create-datakey: datakey_length %s, key_id %s", r.body["datakey_length"], r.body["key_id"])
			}
			if dk.KeyID != keyA || dk.Plaintext.Len() != 32 || dk.Wrapped[0] != frameV2 || int(dk.Wrapped[1])<<8|int(dk.Wrapped[2]) != 32 {
				t.Errorf("data key: id %s, %d bytes, wrapped header % x", dk.KeyID, dk.Plaintext.Len(), dk.Wrapped[:3])
			}

			got, err := c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(dk.Plaintext) {
				t.Fatal("decrypt returned another key")
			}
			got.Wipe()
			r = f.last(t)
			checkCommon(t, r, wire.OpDecryptDataKey)
			checkBinding(t, r)
			if r.str("datakey_cipher_length") != "32" || r.str("cipher_text") != string(dk.Wrapped[frameHeader:]) {
				t.Errorf("decrypt-datakey: datakey_cipher_length %s, cipher_text %s", r.body["datakey_cipher_length"], r.body["cipher_text"])
			}

			in, err := secret.FromBytes(bytes.Repeat([]byte{0xa5}, 48))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Wipe()
			wrapped, err := c.Encrypt(ctx, keyB, in, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			r = f.last(t)
			checkCommon(t, r, wire.OpEncryptDataKey)
			checkBinding(t, r)
			sum := sha256.Sum256(in.Bytes())
			if want := hex.EncodeToString(append(bytes.Clone(in.Bytes()), sum[:]...)); r.str("plain_text") != want {
				t.Errorf("encrypt-datakey plain_text %s, want hex(key || sha256(key)) %s", r.body["plain_text"], want)
			}
			if r.str("datakey_plain_length") != "48" {
				t.Errorf("datakey_plain_length %s", r.body["datakey_plain_length"])
			}
			out, err := c.Decrypt(ctx, keyB, wrapped, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			if !out.Equal(in) {
				t.Fatal("encrypt/decrypt changed the key")
			}
			out.Wipe()

			// ReEncrypt from A to B is a decrypt under A and an encrypt
			// under B, both bound.
			before := f.count()
			w2, err := c.ReEncrypt(ctx, keyA, dk.Wrapped, keyB, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			rs := f.received()[before:]
			if len(rs) != 2 || rs[0].op != wire.OpDecryptDataKey || rs[0].str("key_id") != keyA || rs[1].op != wire.OpEncryptDataKey || rs[1].str("key_id") != keyB {
				t.Fatalf("re-encrypt sent %d requests", len(rs))
			}
			checkBinding(t, rs[0])
			checkBinding(t, rs[1])
			out, err = c.Decrypt(ctx, keyB, w2, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			if !out.Equal(dk.Plaintext) {
				t.Fatal("re-encrypt changed the key")
			}
			out.Wipe()
			if _, err := c.Decrypt(ctx, keyA, w2, testBinding); !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
				t.Fatalf("re-encrypted key decrypted under the source key: %v", err)
			}

			// Every request is a signed POST to /v1.0/{project}/kms/{op}.
			for _, r := range f.received() {
				if _, err := time.Parse(signer.DateFormat, r.header.Get(signer.HeaderDate)); err != nil {
					t.Errorf("%s: X-Sdk-Date %q", r.op, r.header.Get(signer.HeaderDate))
				}
			}
		})
	}
}

// TestEndpointPath keeps a path prefix of the endpoint, as behind a
// gateway that routes on it, and signs the path as sent.
func TestEndpointPath(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	f.prefix = "/gw/kms"
	cfg := staticConfig(t, f)
	cfg.Endpoint = f.srv.URL + "/gw/kms/"
	c := newTestClient(t, cfg)
	if _, err := c.DescribeKey(t.Context(), keyA); err != nil {
		t.Fatal(err)
	}
	if got, want := f.last(t).path, "/gw/kms/v1.0/"+testProject+"/kms/describe-key"; got != want {
		t.Fatalf("path %q, want %q", got, want)
	}
}

func TestArgumentChecks(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	ctxCfg := staticConfig(t, f)
	ctxCfg.AADField = AADFieldContext
	cc := newTestClient(t, ctxCfg)
	ctx := t.Context()
	key32, _ := secret.Random(32)
	defer key32.Wipe()
	big, _ := secret.Random(wire.MaxDataKeyBytes + 1)
	defer big.Wipe()
	wrapped := frame(32, "010203")
	tests := []struct {
		name string
		call func() error
	}{
		{"generate size 0", func() error { _, err := c.GenerateDataKey(ctx, keyA, 0, testBinding); return err }},
		{"generate size 1025", func() error { _, err := c.GenerateDataKey(ctx, keyA, 1025, testBinding); return err }},
		{"generate empty binding", func() error { _, err := c.GenerateDataKey(ctx, keyA, 32, ""); return err }},
		{"generate long aad", func() error {
			_, err := c.GenerateDataKey(ctx, keyA, 32, strings.Repeat("b", wire.MaxAdditionalAuthenticatedData+1))
			return err
		}},
		{"generate long context", func() error {
			_, err := cc.GenerateDataKey(ctx, keyA, 32, strings.Repeat("b", wire.MaxEncryptionContext))
			return err
		}},
		{"encrypt nil key", func() error { _, err := c.Encrypt(ctx, keyA, nil, testBinding); return err }},
		{"encrypt too large", func() error { _, err := c.Encrypt(ctx, keyA, big, testBinding); return err }},
		{"encrypt empty binding", func() error { _, err := c.Encrypt(ctx, keyA, key32, ""); return err }},
		{"decrypt empty binding", func() error { _, err := c.Decrypt(ctx, keyA, wrapped, ""); return err }},
		{"re-encrypt empty binding", func() error { _, err := c.ReEncrypt(ctx, keyA, wrapped, keyA, ""); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, kmsclient.ErrInvalidRequest) {
				t.Fatalf("got %v, want ErrInvalidRequest", err)
			}
		})
	}
	if n := f.count(); n != 0 {
		t.Fatalf("invalid arguments reached the KMS %d times", n)
	}
	// The longest binding each field takes is sent.
	if _, err := c.GenerateDataKey(ctx, keyA, 1, strings.Repeat("b", wire.MaxAdditionalAuthenticatedData)); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.GenerateDataKey(ctx, keyA, wire.MaxDataKeyBytes, strings.Repeat("b", 8000)); err != nil {
		t.Fatal(err)
	}
}

func TestBadFraming(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	for _, tc := range []struct {
		name    string
		wrapped []byte
	}{
		{"nil", nil},
		{"header only", []byte{1, 0, 32}},
		{"version 0", append([]byte{0, 0, 32}, make([]byte, 40)...)},
		{"version 2", append([]byte{2, 0, 32}, make([]byte, 40)...)},
		{"length 0", append([]byte{1, 0, 0}, make([]byte, 40)...)},
		{"length 1025", append([]byte{1, 0x04, 0x01}, make([]byte, 40)...)},
		{"raw KMS cipher text", bytes.Repeat([]byte{0xab}, 120)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Decrypt(t.Context(), keyA, tc.wrapped, testBinding)
			if !errors.Is(err, kmsclient.ErrInvalidCiphertext) || !strings.Contains(err.Error(), "bad framing") {
				t.Fatalf("got %v, want ErrInvalidCiphertext for bad framing", err)
			}
			_, err = c.ReEncrypt(t.Context(), keyA, tc.wrapped, keyA, testBinding)
			if !errors.Is(err, kmsclient.ErrInvalidCiphertext) {
				t.Fatalf("re-encrypt: got %v, want ErrInvalidCiphertext", err)
			}
		})
	}
	if n := f.count(); n != 0 {
		t.Fatalf("badly framed keys reached the KMS %d times", n)
	}
}

// TestResponseChecks feeds the client damaged answers from a KMS (or
// whatever answers in its place).
func TestResponseChecks(t *testing.T) {
	tests := []struct {
		name   string
		op     string
		mutate func(resp map[string]any)
		kind   error
		msg    string
	}{
		{"dgst of another key", wire.OpDecryptDataKey, func(r map[string]any) {
			sum := sha256.Sum256([]byte("another key"))
			r["datakey_dgst"] = hex.EncodeToString(sum[:])
		}, kmsclient.ErrInvalidCiphertext, "datakey_dgst does not match"},
		{"dgst flipped bit", wire.OpDecryptDataKey, func(r map[string]any) {
			d, _ := hex.DecodeString(r["datakey_dgst"].(string))
			d[31] ^= 1
			r["datakey_dgst"] = hex.EncodeToString(d)
		}, kmsclient.ErrInvalidCiphertext, "datakey_dgst"},
		{"dgst upper case", wire.OpDecryptDataKey, func(r map[string]any) {
			r["datakey_dgst"] = strings.ToUpper(r["datakey_dgst"].(string))
		}, nil, ""},
		{"dgst missing", wire.OpDecryptDataKey, func(r map[string]any) { delete(r, "datakey_dgst") }, kmsclient.ErrInvalidCiphertext, "datakey_dgst"},
		{"dgst not hex", wire.OpDecryptDataKey, func(r map[string]any) { r["datakey_dgst"] = "zz" }, kmsclient.ErrInvalidCiphertext, "datakey_dgst"},
		{"dgst truncated", wire.OpDecryptDataKey, func(r map[string]any) { r["datakey_dgst"] = r["datakey_dgst"].(string)[:62] }, kmsclient.ErrInvalidCiphertext, "datakey_dgst"},
		{"key shorter, consistent", wire.OpDecryptDataKey, func(r map[string]any) {
			k, _ := hex.DecodeString(r["data_key"].(string))
			k = k[:16]
			sum := sha256.Sum256(k)
			r["data_key"], r["datakey_length"], r["datakey_dgst"] = hex.EncodeToString(k), "16", hex.EncodeToString(sum[:])
		}, kmsclient.ErrInvalidCiphertext, "16-byte key"},
		{"datakey_length wrong", wire.OpDecryptDataKey, func(r map[string]any) { r["datakey_length"] = "31" }, kmsclient.ErrInvalidCiphertext, "the wrapped key says 32"},
		{"datakey_length absent", wire.OpDecryptDataKey, func(r map[string]any) { delete(r, "datakey_length") }, nil, ""},
		{"datakey_length a number", wire.OpDecryptDataKey, func(r map[string]any) { r["datakey_length"] = 32 }, kmsclient.ErrUnavailable, "malformed KMS response"},
		{"data_key not hex", wire.OpDecryptDataKey, func(r map[string]any) { r["data_key"] = "xy" + r["data_key"].(string)[2:] }, kmsclient.ErrUnavailable, "malformed KMS response"},
		{"data_key missing", wire.OpDecryptDataKey, func(r map[string]any) { delete(r, "data_key") }, kmsclient.ErrInvalidCiphertext, "0-byte key"},
		{"create plain_text short", wire.OpCreateDataKey, func(r map[string]any) { r["plain_text"] = r["plain_text"].(string)[:62] }, kmsclient.ErrUnavailable, "31-byte key, asked for 32"},
		{"create plain_text odd", wire.OpCreateDataKey, func(r map[string]any) { r["plain_text"] = r["plain_text"].(string)[:63] }, kmsclient.ErrUnavailable, "malformed KMS response"},
		{"create cipher_text not hex", wire.OpCreateDataKey, func(r map[string]any) { r["cipher_text"] = "not hex" }, kmsclient.ErrUnavailable, "cipher_text is not hex"},
		{"create cipher_text empty", wire.OpCreateDataKey, func(r map[string]any) { r["cipher_text"] = "" }, kmsclient.ErrUnavailable, "cipher_text is not hex"},
		{"encrypt datakey_length wrong", wire.OpEncryptDataKey, func(r map[string]any) { r["datakey_length"] = "64" }, kmsclient.ErrUnavailable, `"64"-byte key, sent 32`},
		{"encrypt cipher_text not hex", wire.OpEncryptDataKey, func(r map[string]any) { r["cipher_text"] = "g0" }, kmsclient.ErrUnavailable, "cipher_text is not hex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeKMS(t)
			f.addKey(keyA)
			c := newTestClient(t, staticConfig(t, f))
			ctx := t.Context()
			dk, err := c.GenerateDataKey(ctx, keyA, 32, testBinding)
			if err != nil {
				t.Fatal(err)
			}
			defer dk.Wipe()
			f.setMutate(func(op string, r map[string]any) {
				if op == tc.op {
					tc.mutate(r)
				}
			})
			switch tc.op {
			case wire.OpDecryptDataKey:
				var key *secret.Key
				key, err = c.Decrypt(ctx, keyA, dk.Wrapped, testBinding)
				if err == nil && !key.Equal(dk.Plaintext) {
					t.Fatal("decrypt returned another key")
				}
				key.Wipe()
			case wire.OpCreateDataKey:
				var d *kmsclient.DataKey
				d, err = c.GenerateDataKey(ctx, keyA, 32, testBinding)
				d.Wipe()
			case wire.OpEncryptDataKey:
				_, err = c.Encrypt(ctx, keyA, dk.Plaintext, testBinding)
			}
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.kind, tc.msg)
			}
			noKeyMaterial(t, err, dk.Plaintext.Bytes())
		})
	}
}

func TestGenerateKeyIDFallback(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	f.setMutate(func(op string, r map[string]any) { delete(r, "key_id") })
	dk, err := c.GenerateDataKey(t.Context(), keyA, 16, testBinding)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	if dk.KeyID != keyA {
		t.Fatalf("key id %q, want the requested %q", dk.KeyID, keyA)
	}
}

// noKeyMaterial fails when err, under any verb, shows key in hex or raw.
func noKeyMaterial(t *testing.T, err error, key []byte) {
	t.Helper()
	if err == nil || len(key) == 0 {
		return
	}
	lower, upper := hex.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		s := fmt.Sprintf(verb, err)
		if strings.Contains(s, lower) || strings.Contains(s, upper) || strings.Contains(s, string(key)) {
			t.Fatalf("error under %s shows key material: %s", verb, s)
		}
	}
	var ke *kmsclient.Error
	if errors.As(err, &ke) {
		raw, _ := json.Marshal(ke)
		if bytes.Contains(raw, []byte(lower)) || bytes.Contains(raw, []byte(upper)) {
			t.Fatalf("error as JSON shows key material: %s", raw)
		}
	}
}
