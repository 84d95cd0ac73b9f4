// Package kmsconn opens the KMS provider a configuration selects, wrapped
// in the retry policy.
package kmsconn

import (
	"context"
	"fmt"

	"kmsagent/agent/config"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/local"
)

// Open returns the configured provider. Throttled and unavailable calls are
// retried under kmsclient.DefaultRetry.
func Open(ctx context.Context, cfg config.KMS) (kmsclient.KMS, error) {
	var k kmsclient.KMS
	var err error
	switch cfg.Provider {
	case config.ProviderLocal:
		k, err = local.Open(cfg.Local.StateDir)
	default:
		return nil, fmt.Errorf("kms provider %q is not supported by this build", cfg.Provider)
	}
	if err != nil {
		return nil, err
	}
	return kmsclient.WithRetry(k, kmsclient.DefaultRetry), nil
}
