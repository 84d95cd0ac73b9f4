package safepath

import (
	"os"
	"path/filepath"
)

// ReplaceFile writes data to path with mode perm through a temporary
// file in the same directory and a rename, so a reader sees the old
// contents or the new, never part of them. The data is not synced: the
// records written this way live in /run and describe running state.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
