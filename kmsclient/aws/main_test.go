package aws

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestMain keeps the garbage collector off. agent/secret's Wipe
// unmaps a key's memory but does not stop the cleanup that New registered,
// so when a wiped Key is collected the cleanup zeroes unmapped memory and
// the test binary dies with SIGSEGV (or, if the address was mapped again,
// zeroes someone else's memory). The conformance suite wipes keys, so any
// collection during the run can hit it. Remove this once Wipe calls Stop
// on the runtime.Cleanup. The tests allocate a few MB, so running them
// without collection costs nothing.
func TestMain(m *testing.M) {
	debug.SetGCPercent(-1)
	os.Exit(m.Run())
}
