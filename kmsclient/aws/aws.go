// Package aws is the AWS KMS provider of kmsclient, built on
// aws-sdk-go-v2.
//
// Credentials come from the SDK's default chain (environment, shared
// config files, web identity, the EC2 instance role through IMDS), so a
// host needs no kmsagent-specific secret. The SDK's own retries are off:
// callers wrap the client with kmsclient.WithRetry, which retries only
// throttled and unavailable calls, and two retry layers would multiply the
// time an unlock can hang.
package aws

import (
	"context"
	"fmt"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// ProviderName is what Provider returns and what envelopes record.
const ProviderName = "aws"

// BindingContextKey is the encryption context key that carries the volume
// binding. AWS services name their context keys "aws:<service>:<name>"
// (aws:ebs:id, aws:s3:arn); kmsagent follows that shape under its own
// prefix so the key cannot collide with a context set by anything else
// and reads clearly in CloudTrail, which logs the context in the clear.
// It also lets a key policy restrict a host role to its own volumes with
// the condition key kms:EncryptionContext:kmsagent:binding. The name is
// part of the stored format: changing it makes every wrapped key
// undecryptable.
const BindingContextKey = "kmsagent:binding"

// DefaultTimeout bounds one call to AWS KMS when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Limits of the KMS API, checked before calling it so that a bad request
// fails with a clear error and the request value is never echoed back in a
// server's validation message.
const (
	maxDataKeyBytes   = 1024
	maxPlaintextBytes = 4096
)

// Config selects the region and endpoint of AWS KMS.
type Config struct {
	// Region is required unless the SDK finds one in the environment
	// (AWS_REGION, the shared config file).
	Region string
	// Endpoint overrides the KMS endpoint, for a VPC endpoint or a local
	// emulator; empty means the public endpoint of Region.
	Endpoint string
	// Timeout bounds each call; zero means DefaultTimeout.
	Timeout time.Duration
	// InstanceRole takes credentials only from the EC2 instance role
	// (IMDS) instead of the SDK's default chain, which would also read
	// the environment and shared credential files. An initramfs uses
	// it: there, no credential may come from a stored secret.
	InstanceRole bool
}

// Client is the AWS KMS provider. It is safe for concurrent use.
type Client struct {
	kms     *kms.Client
	region  string
	timeout time.Duration
	// timedOut is the cause of a call's context when its timeout ends
	// it, rather than the caller's deadline; mapError says so.
	timedOut error
}

var _ kmsclient.KMS = (*Client)(nil)

// New loads the SDK configuration (credentials are resolved lazily, on the
// first call) and returns a client.
func New(ctx context.Context, cfg Config) (*Client, error) {
	return newClient(ctx, cfg)
}

// newClient is New with extra load options, which tests use to inject
// static credentials.
func newClient(ctx context.Context, cfg Config, extra ...func(*config.LoadOptions) error) (*Client, error) {
	if cfg.Timeout < 0 {
		return nil, configError(fmt.Sprintf("negative timeout %v", cfg.Timeout), nil)
	}
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	opts = append(opts, extra...)
	sdkCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, configError("load AWS SDK configuration", err)
	}
	if cfg.InstanceRole {
		// The IMDS client from the loaded configuration keeps its
		// endpoint settings (AWS_EC2_METADATA_SERVICE_ENDPOINT).
		role := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imds.NewFromConfig(sdkCfg) })
		sdkCfg.Credentials = awssdk.NewCredentialsCache(role)
	}
	if sdkCfg.Region == "" {
		return nil, configError("no region: set region in the [kms] config or AWS_REGION", nil)
	}
	client := kms.NewFromConfig(sdkCfg, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = awssdk.String(cfg.Endpoint)
		}
		// NopRetryer rather than the standard retryer limited to one
		// attempt: that one also keeps a client-side retry quota that can
		// fail calls on its own. RetryMaxAttempts = 1 overrides
		// AWS_MAX_ATTEMPTS, which the SDK would otherwise apply on top.
		o.Retryer = awssdk.NopRetryer{}
		o.RetryMaxAttempts = 1
	})
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	return &Client{kms: client, region: sdkCfg.Region, timeout: timeout, timedOut: fmt.Errorf("no answer within %v", timeout)}, nil
}

func configError(msg string, err error) error {
	return &kmsclient.Error{Provider: ProviderName, Op: "config", Kind: kmsclient.ErrInvalidRequest, Message: msg, Err: err}
}

// Provider returns "aws".
func (c *Client) Provider() string { return ProviderName }

// Region is the region the client signs for.
func (c *Client) Region() string { return c.region }

// GenerateDataKey asks KMS for a data key of size bytes wrapped under
// keyID. DataKey.KeyID is the key ARN KMS reports.
func (c *Client) GenerateDataKey(ctx context.Context, keyID string, size int, binding string) (*kmsclient.DataKey, error) {
	const op = "generate-data-key"
	if err := checkArgs(op, keyID, binding); err != nil {
		return nil, err
	}
	if size < 1 || size > maxDataKeyBytes {
		return nil, invalid(op, keyID, fmt.Sprintf("data key size %d outside 1..%d bytes", size, maxDataKeyBytes))
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, c.timedOut)
	defer cancel()
	out, err := c.kms.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             awssdk.String(keyID),
		NumberOfBytes:     awssdk.Int32(int32(size)),
		EncryptionContext: encryptionContext(binding),
	})
	if err != nil {
		return nil, c.mapError(ctx, op, keyID, err, keyID)
	}
	// The SDK decoded the plaintext onto the heap: move it into a locked
	// buffer before anything else can fail or copy it.
	plain, err := secret.FromBytes(out.Plaintext)
	out.Plaintext = nil
	if err != nil {
		return nil, fmt.Errorf("aws kms %s: store plaintext: %w", op, err)
	}
	if plain.Len() != size || len(out.CiphertextBlob) == 0 {
		n := plain.Len()
		plain.Wipe()
		return nil, &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable,
			Message: fmt.Sprintf("malformed response: %d plaintext bytes (want %d), %d wrapped bytes", n, size, len(out.CiphertextBlob))}
	}
	id := awssdk.ToString(out.KeyId)
	if id == "" {
		id = keyID
	}
	return &kmsclient.DataKey{Plaintext: plain, Wrapped: out.CiphertextBlob, KeyID: id}, nil
}

// Decrypt unwraps wrapped. keyID is always sent: KMS then refuses a
// ciphertext made under any other key instead of using whichever key the
// ciphertext names.
func (c *Client) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	const op = "decrypt"
	if err := checkArgs(op, keyID, binding); err != nil {
		return nil, err
	}
	if len(wrapped) == 0 {
		return nil, invalid(op, keyID, "empty wrapped key")
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, c.timedOut)
	defer cancel()
	out, err := c.kms.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             awssdk.String(keyID),
		CiphertextBlob:    wrapped,
		EncryptionContext: encryptionContext(binding),
	})
	if err != nil {
		return nil, c.mapError(ctx, op, keyID, err, keyID)
	}
	key, err := secret.FromBytes(out.Plaintext)
	out.Plaintext = nil
	if err != nil {
		return nil, fmt.Errorf("aws kms %s: store plaintext: %w", op, err)
	}
	return key, nil
}

// Encrypt wraps plaintext under keyID. The SDK serialises the request on
// the heap, so a copy of the plaintext (base64, in the request body) is
// left for the garbage collector; the KMS API offers no way around that.
func (c *Client) Encrypt(ctx context.Context, keyID string, plaintext *secret.Key, binding string) ([]byte, error) {
	const op = "encrypt"
	if err := checkArgs(op, keyID, binding); err != nil {
		return nil, err
	}
	if n := plaintext.Len(); n < 1 || n > maxPlaintextBytes {
		return nil, invalid(op, keyID, fmt.Sprintf("plaintext of %d bytes outside 1..%d", n, maxPlaintextBytes))
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, c.timedOut)
	defer cancel()
	out, err := c.kms.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             awssdk.String(keyID),
		Plaintext:         plaintext.Bytes(),
		EncryptionContext: encryptionContext(binding),
	})
	if err != nil {
		e := c.mapError(ctx, op, keyID, err, keyID)
		// A validation message may quote the rejected request value,
		// which here is key material (local-kms does for long input).
		if e.Kind == kmsclient.ErrInvalidRequest {
			e.Message = ""
		}
		return nil, e
	}
	if len(out.CiphertextBlob) == 0 {
		return nil, &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Message: "malformed response: empty ciphertext"}
	}
	return out.CiphertextBlob, nil
}

// ReEncrypt has KMS decrypt wrapped under srcKeyID and encrypt it under
// dstKeyID in one call; the plaintext never leaves KMS. With srcKeyID ==
// dstKeyID the result is wrapped under the key's current backing key,
// which is how a blob catches up with an AWS key rotation.
func (c *Client) ReEncrypt(ctx context.Context, srcKeyID string, wrapped []byte, dstKeyID string, binding string) ([]byte, error) {
	const op = "re-encrypt"
	errKey := srcKeyID
	if dstKeyID != srcKeyID {
		errKey = srcKeyID + " -> " + dstKeyID
	}
	if err := checkArgs(op, errKey, binding); err != nil {
		return nil, err
	}
	if srcKeyID == "" || dstKeyID == "" {
		return nil, invalid(op, errKey, "empty key id")
	}
	if len(wrapped) == 0 {
		return nil, invalid(op, errKey, "empty wrapped key")
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, c.timedOut)
	defer cancel()
	ec := encryptionContext(binding)
	out, err := c.kms.ReEncrypt(ctx, &kms.ReEncryptInput{
		SourceKeyId:                  awssdk.String(srcKeyID),
		DestinationKeyId:             awssdk.String(dstKeyID),
		CiphertextBlob:               wrapped,
		SourceEncryptionContext:      ec,
		DestinationEncryptionContext: ec,
	})
	if err != nil {
		return nil, c.mapError(ctx, op, errKey, err, srcKeyID, dstKeyID)
	}
	if len(out.CiphertextBlob) == 0 {
		return nil, &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: errKey, Kind: kmsclient.ErrUnavailable, Message: "malformed response: empty ciphertext"}
	}
	return out.CiphertextBlob, nil
}

// DescribeKey reports the key's metadata. KeyInfo.ID is the key ARN and
// Region the region in it; aliases are not looked up.
func (c *Client) DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error) {
	const op = "describe-key"
	if keyID == "" {
		return nil, invalid(op, keyID, "empty key id")
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, c.timedOut)
	defer cancel()
	out, err := c.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: awssdk.String(keyID)})
	if err != nil {
		return nil, c.mapError(ctx, op, keyID, err)
	}
	md := out.KeyMetadata
	if md == nil {
		return nil, &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: keyID, Kind: kmsclient.ErrUnavailable, Message: "malformed response: no key metadata"}
	}
	info := &kmsclient.KeyInfo{
		ID:           awssdk.ToString(md.Arn),
		Description:  awssdk.ToString(md.Description),
		State:        keyState(md.KeyState),
		CreatedAt:    awssdk.ToTime(md.CreationDate),
		DeletionDate: awssdk.ToTime(md.DeletionDate),
		Provider:     ProviderName,
		Region:       regionOf(awssdk.ToString(md.Arn)),
	}
	if info.ID == "" {
		info.ID = awssdk.ToString(md.KeyId)
	}
	if info.Region == "" {
		info.Region = c.region
	}
	return info, nil
}

// keyState normalises an AWS key state. Creating and Updating have no
// kmsclient equivalent and are passed through as they are rather than
// being guessed into one.
func keyState(s types.KeyState) kmsclient.KeyState {
	switch s {
	case types.KeyStateEnabled:
		return kmsclient.KeyEnabled
	case types.KeyStateDisabled:
		return kmsclient.KeyDisabled
	case types.KeyStatePendingDeletion, types.KeyStatePendingReplicaDeletion:
		return kmsclient.KeyPendingDeletion
	case types.KeyStatePendingImport:
		return kmsclient.KeyPendingImport
	case types.KeyStateUnavailable:
		return kmsclient.KeyUnavailable
	}
	return kmsclient.KeyState(s)
}

// regionOf returns the region field of a KMS key ARN
// (arn:PARTITION:kms:REGION:ACCOUNT:key/ID), or "".
func regionOf(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" {
		return ""
	}
	return parts[3]
}

func encryptionContext(binding string) map[string]string {
	return map[string]string{BindingContextKey: binding}
}

// checkArgs refuses requests that must not reach AWS. An empty binding
// binds the wrapped key to no volume at all, so it is refused here rather
// than left to whatever KMS makes of an empty context value.
func checkArgs(op, keyID, binding string) error {
	if keyID == "" {
		return invalid(op, keyID, "empty key id")
	}
	if binding == "" {
		return invalid(op, keyID, "empty binding")
	}
	return nil
}

func invalid(op, keyID, msg string) error {
	return &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: keyID, Kind: kmsclient.ErrInvalidRequest, Message: msg}
}
