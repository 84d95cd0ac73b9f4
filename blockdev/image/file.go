package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Output is a file that appears under its name only when complete: it is
// written as a temporary file in the same directory and linked into place
// by Commit, after fsync. A failed or interrupted run leaves nothing at
// the name (Abort removes the temporary file).
type Output struct {
	*os.File
	path string
}

// CreateOutput starts an output file at path, which must not exist:
// images and raw disks are large and precious, and overwriting one by a
// typo is not undoable.
func CreateOutput(path string, mode fs.FileMode) (*Output, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s already exists; remove it or choose another name", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create output: %w", err)
	}
	return &Output{File: f, path: path}, nil
}

// Commit makes the output durable and visible under its name. link(2)
// fails if the name appeared in the meantime, so nothing is clobbered.
func (o *Output) Commit() error {
	tmp := o.File.Name()
	defer os.Remove(tmp)
	if err := o.File.Sync(); err != nil {
		o.File.Close()
		return fmt.Errorf("sync %s: %w", o.path, err)
	}
	if err := o.File.Close(); err != nil {
		return fmt.Errorf("close %s: %w", o.path, err)
	}
	if err := os.Link(tmp, o.path); err != nil {
		return fmt.Errorf("create %s: %w", o.path, err)
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	return syncDir(filepath.Dir(o.path))
}

// Abort discards the output.
func (o *Output) Abort() {
	o.File.Close()
	os.Remove(o.File.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
