package aws

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/kmstest"
)

const (
	testRegion  = "eu-west-1"
	testAccount = "111122223333"
)

// isolateSDK keeps the host's AWS setup out of the test: no shared config
// or credentials files, no profile, no IMDS.
func isolateSDK(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, v := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_MAX_ATTEMPTS"} {
		t.Setenv(v, "")
	}
}

// newTestClient returns a client for endpoint with static dummy
// credentials; neither test server checks signatures.
func newTestClient(t *testing.T, endpoint string, timeout time.Duration) *Client {
	t.Helper()
	isolateSDK(t)
	c, err := newClient(context.Background(), Config{Region: testRegion, Endpoint: endpoint, Timeout: timeout},
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDKMSAGENTTEST", "kmsagent-test-secret", "")))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

// startLocalKMS runs local-kms (tstest.StartLocalKMS) and checks that it
// answers.
func startLocalKMS(t *testing.T) string {
	t.Helper()
	endpoint := tstest.StartLocalKMS(t, testAccount, testRegion)
	// One call checks that it answers, with no retries.
	c := newTestClient(t, endpoint, 10*time.Second)
	if _, err := c.kms.ListKeys(context.Background(), &kms.ListKeysInput{}); err != nil {
		t.Fatalf("local-kms at %s does not answer: %v", endpoint, err)
	}
	return endpoint
}

// keyRefCheck stands in for a check AWS makes and local-kms does not.
// A local-kms blob is [ARN length][key ARN][backing key version][AES-GCM
// nonce, ciphertext, tag], and when Decrypt names the key local-kms uses
// that key and never looks at the ARN in the blob, so flipping a byte of
// the ARN goes unnoticed; the conformance suite's "flip-mid" lands there.
// AWS authenticates the whole blob and answers InvalidCiphertextException
// or IncorrectKeyException. keyRefCheck answers as AWS would when the
// blob names a key other than the one asked for, and passes every other
// call through to the client under test. The KeyReferenceNotAuthenticated
// subtest notices when the emulator stops needing it.
type keyRefCheck struct {
	kmsclient.KMS
}

func (k keyRefCheck) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	if len(wrapped) > 0 && len(wrapped) > 1+int(wrapped[0]) {
		ref := string(wrapped[1 : 1+int(wrapped[0])])
		if strings.HasPrefix(ref, "arn:") && ref != keyID && !strings.HasSuffix(ref, ":key/"+keyID) {
			return nil, &kmsclient.Error{Provider: ProviderName, Op: "decrypt", KeyID: keyID,
				Kind: kmsclient.ErrInvalidCiphertext, Code: "IncorrectKeyException",
				Message: "blob names another key (checked by the test, as AWS does; local-kms does not)"}
		}
	}
	return k.KMS.Decrypt(ctx, keyID, wrapped, binding)
}

func TestLocalKMSConformance(t *testing.T) {
	endpoint := startLocalKMS(t)
	c := newTestClient(t, endpoint, 5*time.Second)
	admin := c.kms
	ctx := context.Background()

	kmstest.Run(t, kmstest.Harness{
		KMS: keyRefCheck{c},
		NewKey: func(t *testing.T) string {
			t.Helper()
			out, err := admin.CreateKey(ctx, &kms.CreateKeyInput{Description: awssdk.String("kmsagent test key")})
			if err != nil {
				t.Fatalf("create key: %v", err)
			}
			return awssdk.ToString(out.KeyMetadata.KeyId)
		},
		Disable: func(t *testing.T, keyID string) {
			t.Helper()
			if _, err := admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: awssdk.String(keyID)}); err != nil {
				t.Fatalf("disable key: %v", err)
			}
		},
		ScheduleDeletion: func(t *testing.T, keyID string) {
			t.Helper()
			_, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
				KeyId: awssdk.String(keyID), PendingWindowInDays: awssdk.Int32(7),
			})
			if err != nil {
				t.Fatalf("schedule key deletion: %v", err)
			}
		},
		// AWS rotation keeps every backing key and is invisible to
		// callers. local-kms rotates only on its yearly schedule and has
		// no RotateKeyOnDemand, so there is nothing to drive here.
		Rotate:       nil,
		MissingKeyID: "0b0c0d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
		// DisabledDecryptKind stays the documented DisabledException:
		// local-kms answers AccessDeniedException only for a Decrypt
		// without KeyId (it then resolves the key from the blob), and
		// this client always sends KeyId.
	})

	t.Run("KeyReferenceNotAuthenticated", func(t *testing.T) {
		// The reason for keyRefCheck: when it stops holding, drop it.
		out, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		const binding = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
		dk, err := c.GenerateDataKey(ctx, awssdk.ToString(out.KeyMetadata.KeyId), 32, binding)
		if err != nil {
			t.Fatal(err)
		}
		defer dk.Wipe()
		w := bytes.Clone(dk.Wrapped)
		w[1+int(w[0])/2] ^= 0x80 // inside the key ARN
		got, err := c.Decrypt(ctx, dk.KeyID, w, binding)
		if err != nil {
			t.Fatalf("local-kms now rejects a blob with a damaged key reference (%v): remove keyRefCheck", err)
		}
		got.Wipe()
	})

	t.Run("DescribeFields", func(t *testing.T) {
		out, err := admin.CreateKey(ctx, &kms.CreateKeyInput{Description: awssdk.String("volume keys")})
		if err != nil {
			t.Fatal(err)
		}
		id := awssdk.ToString(out.KeyMetadata.KeyId)
		info, err := c.DescribeKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantARN := "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/" + id
		if info.ID != wantARN || info.Description != "volume keys" || info.Region != testRegion ||
			info.State != kmsclient.KeyEnabled || info.CreatedAt.IsZero() || !info.DeletionDate.IsZero() {
			t.Fatalf("describe: %+v", info)
		}
		if _, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &id, PendingWindowInDays: awssdk.Int32(7)}); err != nil {
			t.Fatal(err)
		}
		info, err = c.DescribeKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(info.DeletionDate); info.State != kmsclient.KeyPendingDeletion || d < 6*24*time.Hour || d > 8*24*time.Hour {
			t.Fatalf("describe pending deletion: %+v", info)
		}
	})

	t.Run("RefinedInvalidState", func(t *testing.T) {
		// Decrypt, Encrypt and ReEncrypt with a key pending deletion all
		// answer KMSInvalidStateException; the Code stays the AWS one.
		out, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		id := awssdk.ToString(out.KeyMetadata.KeyId)
		const binding = "3f1e0c5a-2b4d-4c6e-8f0a-1b2c3d4e5f60"
		dk, err := c.GenerateDataKey(ctx, id, 32, binding)
		if err != nil {
			t.Fatal(err)
		}
		defer dk.Wipe()
		if _, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &id, PendingWindowInDays: awssdk.Int32(7)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.Decrypt(ctx, id, dk.Wrapped, binding)
		var ke *kmsclient.Error
		if !errors.As(err, &ke) || ke.Kind != kmsclient.ErrKeyPendingDeletion || ke.Code != codeInvalidState || ke.Provider != "aws" || ke.Op != "decrypt" {
			t.Fatalf("decrypt with key pending deletion: %v", err)
		}
		_, err = c.Encrypt(ctx, id, dk.Plaintext, binding)
		if !errors.Is(err, kmsclient.ErrKeyPendingDeletion) {
			t.Fatalf("encrypt with key pending deletion: %v", err)
		}

		// A key waiting for imported material answers the same exception;
		// DescribeKey tells it apart.
		ext, err := admin.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GenerateDataKey(ctx, awssdk.ToString(ext.KeyMetadata.KeyId), 32, binding)
		if !errors.As(err, &ke) || ke.Kind != kmsclient.ErrInvalidRequest || ke.Code != codeInvalidState {
			t.Fatalf("generate with key pending import: %v", err)
		}
	})
}
