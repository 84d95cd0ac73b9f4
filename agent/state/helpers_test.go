package state

import (
	"path/filepath"
	"testing"
)

// doc stands for the daemon's state document.
type doc struct {
	Generation int               `json:"generation"`
	Volumes    map[string]volume `json:"volumes,omitempty"`
}

type volume struct {
	Kind      string `json:"kind"`
	WorkerPID int    `json:"worker_pid,omitempty"`
	Device    string `json:"device,omitempty"`
}

func opts() Options[doc] { return Options[doc]{Version: 2} }

// stateDir returns a path for a state directory that does not exist yet.
func stateDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "state")
}

func open(t testing.TB, dir string) *Store[doc] {
	t.Helper()
	s, err := Open(dir, opts())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sample(gen int) doc {
	return doc{Generation: gen, Volumes: map[string]volume{
		"data":  {Kind: "luks", Device: "/dev/mapper/data"},
		"share": {Kind: "share", WorkerPID: 1234},
	}}
}
