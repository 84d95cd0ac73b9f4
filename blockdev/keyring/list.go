package keyring

import (
	"fmt"
	"os"
	"strings"
)

// Listed returns the /proc/keys lines of the keys this process can see
// whose description starts with prefix: the way to check that no
// kmsagent: key outlived the table load that needed it.
func Listed(prefix string) ([]string, error) {
	b, err := os.ReadFile("/proc/keys")
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	var hits []string
	for _, line := range strings.Split(string(b), "\n") {
		// id flags usage timeout perm uid gid type description: summary
		f := strings.Fields(line)
		if len(f) >= 9 && strings.HasPrefix(f[8], prefix) {
			hits = append(hits, line)
		}
	}
	return hits, nil
}
