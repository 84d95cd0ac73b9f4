package initramfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/config"
)

// fullConfig is a host configuration with everything the initramfs must
// not get: volumes, agent settings, kms serve with client secrets.
const fullConfig = `
[agent]
admin_group = "wheel"

[[volume]]
name = "data"
type = "luks"
source = "/dev/vdb"
target = "/data"

[kms.serve]
listen = "127.0.0.1:8443"
[[kms.serve.client]]
access_key = "HOST1"
secret_key_file = "/etc/kmsagent/serve/host1.sk"
keys = ["*"]
`

func TestNewPlan(t *testing.T) {
	// The host's environment may name a region; the initramfs has none.
	t.Setenv("AWS_REGION", "eu-west-1")
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	write(t, ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	combined := filepath.Join(dir, "combined.pem")
	write(t, combined, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n")

	tests := []struct {
		name      string
		kms       string
		wantErr   string // "" for a plan
		secret    bool   // the error wraps ErrSecret
		wantFiles []string
	}{
		{name: "huaweicloud metadata", kms: `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = "https://kms.lab.example:8443"
project_id = "p1"
credentials = "metadata"
metadata_endpoint = "http://10.0.2.100"
ca_file = "` + ca + `"`, wantFiles: []string{ca}},
		{name: "aws instance role", kms: `
[kms]
provider = "aws"
[kms.aws]
region = "eu-west-1"`},
		{name: "aws without region", kms: `
[kms]
provider = "aws"`, wantErr: "kms.aws.region"},
		{name: "static AK/SK", kms: `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
region = "cn-north-4"
project_id = "p1"
access_key = "AK1"
secret_key_file = "/etc/kmsagent/kms.sk"`, wantErr: "kms.huaweicloud.credentials", secret: true},
		{name: "TLS client key", kms: `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
region = "cn-north-4"
project_id = "p1"
credentials = "metadata"
cert_file = "/etc/kmsagent/client.pem"
key_file = "/etc/kmsagent/client.key"`, wantErr: "kms.huaweicloud.key_file", secret: true},
		{name: "CA file with a private key", kms: `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
region = "cn-north-4"
project_id = "p1"
credentials = "metadata"
ca_file = "` + combined + `"`, wantErr: "holds a private key", secret: true},
		{name: "embedded KMS", kms: `
[kms]
provider = "local"`, wantErr: "kms.provider", secret: true},
		{name: "no configuration (the default is the embedded KMS)", kms: "", wantErr: "kms.provider", secret: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fullConfig + tt.kms))
			if err != nil {
				t.Fatal(err)
			}
			plan, err := NewPlan(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrSecret) != tt.secret {
					t.Fatalf("errors.Is(%v, ErrSecret) = %v", err, !tt.secret)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			text := string(plan.Config)
			for _, banned := range []string{"[agent]", "volume", "serve", "HOST1", "host1.sk", "wheel", "secret_key_file", "access_key", "state_dir"} {
				if strings.Contains(text, banned) {
					t.Errorf("initramfs configuration holds %q:\n%s", banned, text)
				}
			}
			back, err := config.Parse(plan.Config)
			if err != nil {
				t.Fatalf("does not parse back: %v\n%s", err, text)
			}
			if back.KMS.Provider != cfg.KMS.Provider || back.KMS.HuaweiCloud != cfg.KMS.HuaweiCloud || back.KMS.AWS != cfg.KMS.AWS ||
				len(back.Volumes) != 0 || len(back.KMS.Serve.Clients) != 0 {
				t.Errorf("parsed back to %+v, want the KMS settings of %+v", back.KMS, cfg.KMS)
			}
			if strings.Join(plan.Files, ",") != strings.Join(tt.wantFiles, ",") {
				t.Errorf("files %q, want %q", plan.Files, tt.wantFiles)
			}
		})
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
