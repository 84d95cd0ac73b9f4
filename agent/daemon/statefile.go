package daemon

import (
	"context"
	"errors"
	"os"

	"kmsagent/agent/state"
)

// stateVersion is the schema version of the state file's document.
const stateVersion = 1

// stateDoc is the state file's document: the volume table.
type stateDoc struct {
	Volumes []Record `json:"volumes"`
}

// StateFile is the StateStore kept in [agent] state_dir by agent/state:
// written atomically, and locked for one daemon at a time.
type StateFile struct {
	store *state.Store[stateDoc]
}

// OpenStateFile opens the state directory and takes its lock. A second
// daemon on the same directory gets an error wrapping state.ErrLocked
// that names the holder's pid.
func OpenStateFile(dir string) (*StateFile, error) {
	s, err := state.Open(dir, state.Options[stateDoc]{Version: stateVersion})
	if err != nil {
		return nil, err
	}
	return &StateFile{store: s}, nil
}

// Path is the state file's path.
func (f *StateFile) Path() string { return f.store.Path() }

// Load returns the records; none on the first start. A damaged file or
// one of another version is an error (state.ErrCorrupt,
// state.ErrVersion) that the daemon reports before it rebuilds the file.
func (f *StateFile) Load(context.Context) ([]Record, error) {
	doc, err := f.store.Load()
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return doc.Volumes, err
}

// Save replaces the file with recs.
func (f *StateFile) Save(_ context.Context, recs []Record) error {
	return f.store.Save(stateDoc{Volumes: recs})
}

// Close releases the lock.
func (f *StateFile) Close() error { return f.store.Close() }
