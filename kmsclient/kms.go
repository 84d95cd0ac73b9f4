// Package kmsclient defines the interface kmsagent uses to reach a key
// management service, the typed errors every provider maps its failures to,
// and the retry policy applied on top of any provider.
//
// A customer master key (CMK) never leaves the KMS. Data keys are generated
// by the KMS, handed to the caller once in plaintext and otherwise only
// exist wrapped under a CMK. Every wrap and unwrap carries a binding (the
// volume UUID) that the provider authenticates, so a wrapped key copied next
// to another volume does not unwrap there.
package kmsclient

import (
	"context"
	"time"

	"kmsagent/agent/secret"
)

// KMS is implemented by every provider. All methods may block on the
// network and honour ctx. Plaintext keys are returned as *secret.Key, which
// the caller must Wipe when done.
type KMS interface {
	// Provider names the provider ("local", "huaweicloud", "aws"); it is
	// recorded in envelopes so the right provider is used to unwrap.
	Provider() string

	// GenerateDataKey returns a fresh random data key of size bytes, in
	// plaintext and wrapped under keyID.
	GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*DataKey, error)

	// Decrypt unwraps a data key that was wrapped under keyID with the same
	// binding.
	Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error)

	// Encrypt wraps a key the caller already holds (for example the master
	// key of an existing gocryptfs directory) under keyID.
	Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error)

	// ReEncrypt unwraps wrapped (made under srcKeyID) and wraps it again
	// under dstKeyID, or under the current version of the same CMK when the
	// two are equal, without the plaintext leaving the KMS where the
	// provider supports that.
	ReEncrypt(ctx context.Context, srcKeyID string, wrapped []byte, dstKeyID string, binding string) ([]byte, error)

	// DescribeKey reports the metadata of a CMK.
	DescribeKey(ctx context.Context, keyID string) (*KeyInfo, error)
}

// DataKey is the result of GenerateDataKey.
type DataKey struct {
	Plaintext *secret.Key
	Wrapped   []byte
	// KeyID is the CMK that wrapped the key, as the provider names it (a
	// UUID, or an ARN for AWS). Store it next to Wrapped.
	KeyID string
}

// Wipe zeroes the plaintext half of the data key.
func (d *DataKey) Wipe() {
	if d != nil && d.Plaintext != nil {
		d.Plaintext.Wipe()
	}
}

// KeyState is the life-cycle state of a CMK, normalised across providers.
type KeyState string

const (
	KeyEnabled         KeyState = "Enabled"
	KeyDisabled        KeyState = "Disabled"
	KeyPendingDeletion KeyState = "PendingDeletion"
	KeyPendingImport   KeyState = "PendingImport"
	KeyUnavailable     KeyState = "Unavailable"
)

// KeyInfo is what DescribeKey reports. Fields a provider does not know are
// left zero.
type KeyInfo struct {
	ID          string    `json:"id"`
	Alias       string    `json:"alias,omitempty"`
	Description string    `json:"description,omitempty"`
	State       KeyState  `json:"state"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	// DeletionDate is set while the key is pending deletion.
	DeletionDate time.Time `json:"deletion_date,omitzero"`
	// Versions counts the key versions (local provider); the newest wraps.
	Versions int    `json:"versions,omitempty"`
	Provider string `json:"provider"`
	Region   string `json:"region,omitempty"`
}
