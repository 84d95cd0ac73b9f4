package cryptkey_test

import (
	"context"
	"log/slog"

	"kmsagent/agent/audit"
	"kmsagent/agent/cryptkey"
	"kmsagent/kmsclient"
)

// The daemon's wiring: the key socket for crypttab lines that name
// /run/kmsagent/cryptsetup.sock, the volumes found through /etc/crypttab,
// keys unwrapped with the daemon's KMS client, every use in its audit log.
func Example() {
	var (
		ctx context.Context // the daemon's lifetime
		kms kmsclient.KMS   // from kmsconn.Open
		log *audit.Log      // from audit.Open
	)
	ln, err := cryptkey.Listen("/run/kmsagent/cryptsetup.sock")
	if err != nil {
		slog.Error("crypttab key socket", "error", err)
		return
	}
	defer ln.Close()
	s := &cryptkey.Server{
		Lookup: &cryptkey.Crypttab{},
		Keyer:  cryptkey.KMSKeyer{KMS: kms},
		Audit:  log,
		Log:    slog.Default(),
	}
	if err := s.Serve(ctx, ln); err != nil {
		slog.Error("crypttab key socket", "error", err)
	}
}
