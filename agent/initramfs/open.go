package initramfs

import (
	"context"
	"time"

	"kmsagent/agent/config"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/aws"
	"kmsagent/kmsclient/huaweicloud"
)

// OpenKMS opens the KMS of an initramfs configuration with instance
// credentials only: the rule of NewPlan is checked again, so a
// configuration that names a stored secret is refused here too, and AWS
// takes the instance role and nothing else of its default chain. The
// client does not retry; Unlock does, with messages.
func OpenKMS(ctx context.Context, cfg *config.Config) (kmsclient.KMS, error) {
	if _, err := NewPlan(cfg); err != nil {
		return nil, err
	}
	k := cfg.KMS
	timeout := time.Duration(k.Timeout)
	if k.Provider == config.ProviderAWS {
		return aws.New(ctx, aws.Config{Region: k.AWS.Region, Endpoint: k.AWS.Endpoint, Timeout: timeout, InstanceRole: true})
	}
	h := k.HuaweiCloud
	return huaweicloud.New(ctx, huaweicloud.Config{
		Endpoint:         h.Endpoint,
		ProjectID:        h.ProjectID,
		Region:           h.Region,
		Credentials:      h.Credentials,
		MetadataEndpoint: h.MetadataEndpoint,
		AADField:         h.AADField,
		CAFile:           h.CAFile,
		Timeout:          timeout,
	})
}
