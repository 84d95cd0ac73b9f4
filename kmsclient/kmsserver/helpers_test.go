package kmsserver_test

import (
	"os"
	"testing"
)

// requireRoot fails under CI=true, where tests run as root and a skip
// would hide a missing check, and skips elsewhere.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root to connect with other credentials, and CI=true forbids skipping")
	}
	t.Skip("needs root to connect with other credentials")
}
