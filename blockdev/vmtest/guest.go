package vmtest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// InGuest reports whether this process runs inside a vmtest VM.
func InGuest() bool { return os.Getenv(GuestEnvVar) == "1" }

// RequireGuest skips a test meant to run inside the VM when it runs
// anywhere else, such as in a plain `go test` on the host.
func RequireGuest(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("runs inside the vmtest VM only")
	}
}

// Report prints the test's VMTEST-RESULT line when it ends, from its
// outcome: FAIL if it failed, SKIP if it skipped, PASS otherwise.
func Report(t testing.TB) {
	t.Cleanup(func() {
		status := Pass
		switch {
		case t.Failed():
			status = Fail
		case t.Skipped():
			status = Skip
		}
		fmt.Fprintf(os.Stdout, "%s %s %s\n", resultPrefix, t.Name(), status)
	})
}

// Data prints a VMTEST-DATA line, for values the host test wants back
// (read them with Result.Data). Line breaks in value become blanks.
func Data(name, value string) {
	fmt.Fprintf(os.Stdout, "%s %s %s\n", dataPrefix, oneLine(name), oneLine(value))
}

// Eventually polls cond for up to 5 s. The kernel tidies some things up
// asynchronously (invalidated keys, deferred removes, autoclear loops),
// so a guest test waits for them rather than checking once.
func Eventually(cond func() bool) bool {
	return tstest.Poll(5*time.Second, cond)
}
