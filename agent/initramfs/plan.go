package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"

	"kmsagent/agent/config"
)

// ErrSecret is wrapped by every refusal to put a stored secret into an
// initramfs.
var ErrSecret = errors.New("the initramfs would carry a secret")

// SecretError names the setting that stores a secret and what to use
// instead.
type SecretError struct {
	Setting string // e.g. kms.huaweicloud.credentials
	Why     string // what the secret is and what to do
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("%s: %s; the initramfs is on the unencrypted /boot, where anyone with the disk or image can read it", e.Setting, e.Why)
}

func (e *SecretError) Unwrap() error { return ErrSecret }

// Plan is what the initramfs gets from the configuration.
type Plan struct {
	// Config is a configuration file holding only the [kms] table.
	Config []byte
	// Files are public files Config names (a CA bundle), to be copied
	// to the same path in the initramfs.
	Files []string
}

// The configuration written into the initramfs: the [kms] table's
// settings that an instance credential uses, nothing else.
type initramfsConfig struct {
	KMS initramfsKMS `toml:"kms"`
}

type initramfsKMS struct {
	Provider    string          `toml:"provider"`
	Timeout     config.Duration `toml:"timeout"`
	HuaweiCloud *huaweiMetadata `toml:"huaweicloud,omitempty"`
	AWS         *config.AWS     `toml:"aws,omitempty"`
}

type huaweiMetadata struct {
	Endpoint         string `toml:"endpoint,omitempty"`
	ProjectID        string `toml:"project_id"`
	Region           string `toml:"region,omitempty"`
	Credentials      string `toml:"credentials"`
	MetadataEndpoint string `toml:"metadata_endpoint"`
	AADField         string `toml:"aad_field"`
	CAFile           string `toml:"ca_file,omitempty"`
}

// NewPlan checks the credential rule on cfg and returns what goes into
// the initramfs. Errors for a stored secret wrap ErrSecret.
func NewPlan(cfg *config.Config) (*Plan, error) {
	k := cfg.KMS
	out := initramfsConfig{KMS: initramfsKMS{Provider: k.Provider, Timeout: k.Timeout}}
	var files []string
	switch k.Provider {
	case config.ProviderLocal:
		return nil, &SecretError{"kms.provider", fmt.Sprintf("the embedded local KMS keeps its master keys in %s; unlocking at boot needs a KMS reached with instance credentials (provider \"huaweicloud\" with credentials = \"metadata\", or \"aws\" with an instance role)", k.Local.StateDir)}
	case config.ProviderHuaweiCloud:
		h := k.HuaweiCloud
		if h.Credentials != "metadata" {
			return nil, &SecretError{"kms.huaweicloud.credentials", fmt.Sprintf("credentials = %q keeps an AK/SK secret (secret_key_file = %q); set credentials = \"metadata\" and give the ECS an agency for KMS", h.Credentials, h.SecretKeyFile)}
		}
		if h.KeyFile != "" || h.CertFile != "" {
			return nil, &SecretError{"kms.huaweicloud.key_file", fmt.Sprintf("a TLS client certificate's private key (%s) is a secret; reach the KMS without a client certificate from early boot", h.KeyFile)}
		}
		if h.CAFile != "" {
			files = append(files, h.CAFile)
		}
		out.KMS.HuaweiCloud = &huaweiMetadata{
			Endpoint: h.Endpoint, ProjectID: h.ProjectID, Region: h.Region, Credentials: h.Credentials,
			MetadataEndpoint: h.MetadataEndpoint, AADField: h.AADField, CAFile: h.CAFile,
		}
	case config.ProviderAWS:
		if k.AWS.Region == "" {
			return nil, fmt.Errorf("kms.aws.region is required for the initramfs, which has no AWS_REGION")
		}
		a := k.AWS
		out.KMS.AWS = &a
	default:
		return nil, fmt.Errorf("kms.provider = %q cannot unlock at boot", k.Provider)
	}
	for _, f := range files {
		if err := checkPublic(f); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	buf.WriteString("# The KMS settings of the initramfs, written by kmsagent's initramfs-tools\n# hook from /etc/kmsagent/agent.toml. Instance credentials only: no secret.\n")
	enc := toml.NewEncoder(&buf)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode the initramfs configuration: %w", err)
	}
	// What the initramfs reads must be what was checked here.
	back, err := config.Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("the initramfs configuration does not parse back%w", err)
	}
	if back.KMS.Provider != k.Provider {
		return nil, fmt.Errorf("the initramfs configuration parses back to provider %q", back.KMS.Provider)
	}
	return &Plan{Config: buf.Bytes(), Files: files}, nil
}

// maxPublicFile bounds what is read of a CA bundle to look for keys.
const maxPublicFile = 16 << 20

// checkPublic refuses a file that holds a private key: ca_file pointing at
// a combined certificate-and-key PEM would otherwise carry the key along.
func checkPublic(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("kms.huaweicloud.ca_file: %w", err)
	}
	if len(data) > maxPublicFile {
		return fmt.Errorf("kms.huaweicloud.ca_file %s is larger than %d bytes; is it a CA bundle?", path, maxPublicFile)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		return &SecretError{"kms.huaweicloud.ca_file", fmt.Sprintf("%s holds a private key; give a file with the CA certificates only", path)}
	}
	return nil
}
