// Package kmsconn opens the KMS provider a configuration selects, wrapped
// in the retry policy.
package kmsconn

import (
	"context"
	"fmt"
	"time"

	"kmsagent/agent/config"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/aws"
	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/local"
)

// Open returns the configured provider. Throttled and unavailable calls are
// retried under kmsclient.DefaultRetry; cfg.Timeout bounds each attempt.
func Open(ctx context.Context, cfg config.KMS) (kmsclient.KMS, error) {
	return OpenRetry(ctx, cfg, kmsclient.DefaultRetry)
}

// OpenRetry is Open with the retry policy p.
func OpenRetry(ctx context.Context, cfg config.KMS, p kmsclient.RetryPolicy) (kmsclient.KMS, error) {
	var k kmsclient.KMS
	var err error
	timeout := time.Duration(cfg.Timeout)
	switch cfg.Provider {
	case config.ProviderLocal:
		k, err = local.Open(cfg.Local.StateDir)
	case config.ProviderHuaweiCloud:
		h := cfg.HuaweiCloud
		k, err = huaweicloud.New(ctx, huaweicloud.Config{
			Endpoint:         h.Endpoint,
			ProjectID:        h.ProjectID,
			Region:           h.Region,
			Credentials:      h.Credentials,
			AccessKey:        h.AccessKey,
			SecretKeyFile:    h.SecretKeyFile,
			MetadataEndpoint: h.MetadataEndpoint,
			AADField:         h.AADField,
			CAFile:           h.CAFile,
			CertFile:         h.CertFile,
			KeyFile:          h.KeyFile,
			Timeout:          timeout,
		})
	case config.ProviderAWS:
		k, err = aws.New(ctx, aws.Config{Region: cfg.AWS.Region, Endpoint: cfg.AWS.Endpoint, Timeout: timeout})
	default:
		return nil, fmt.Errorf("kms provider %q is not supported; use local, huaweicloud or aws", cfg.Provider)
	}
	if err != nil {
		return nil, err
	}
	return kmsclient.WithRetry(k, p), nil
}
