package crypt_test

import (
	"os"
	"strings"
	"time"
)

// Shared by the host and the guest side of the VM tests.
const (
	guestConfig = "/etc/kmsagent/agent.toml"
	guestKMSDir = "/vmtest/kms"
	guestKeyID  = "/vmtest/key-id" // holds the KMS key id
	kmsagentBin = "/bin/kmsagent"
	helloText   = "hello from the host\n"
	vmText      = "written in the VM\n"
)

// procKeysWith returns the /proc/keys lines whose description starts
// with prefix.
func procKeysWith(prefix string) ([]string, error) {
	b, err := os.ReadFile("/proc/keys")
	if err != nil {
		return nil, err
	}
	var hits []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 9 && strings.HasPrefix(f[8], prefix) {
			hits = append(hits, line)
		}
	}
	return hits, nil
}

// eventually polls cond for up to 5 s.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
