package initramfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
	"kmsagent/blockdev/dm"
)

// RecordDir is where the keyscript notes each volume it unlocked.
// initramfs-tools moves /run to the real root at the switch, so the
// daemon finds the notes there and reports the volumes as unlocked by
// the initramfs, with the key that did it.
const RecordDir = "/run/kmsagent/initramfs"

// Record is one volume the initramfs unlocked: the name cryptsetup
// mapped it under, its LUKS2 UUID and the KMS key that unwrapped its
// data key. It holds nothing secret.
type Record struct {
	Name     string    `json:"name"`
	UUID     string    `json:"uuid"`
	Source   string    `json:"source"`
	Provider string    `json:"kms_provider"`
	KeyID    string    `json:"kms_key_id"`
	Time     time.Time `json:"time"`
}

// maxRecord bounds what ReadRecord reads.
const maxRecord = 16 << 10

// WriteRecord writes r as dir/<name>.json, readable by everyone
// (status is), writable by root only.
func WriteRecord(dir string, r Record) error {
	if err := dm.ValidateName(r.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("initramfs record: %w", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := safepath.ReplaceFile(filepath.Join(dir, r.Name+".json"), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("initramfs record: %w", err)
	}
	return nil
}

// ErrNoRecord means the initramfs noted nothing for the volume.
var ErrNoRecord = errors.New("no initramfs record")

// ReadRecord reads the record of the mapping name. Only a regular file
// owned by root counts: anyone else could only have written it where
// root let them, and a record makes a mapping look unlocked by the KMS.
func ReadRecord(dir, name string) (Record, error) {
	if err := dm.ValidateName(name); err != nil {
		return Record{}, err
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".json"), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, ErrNoRecord
	}
	if err != nil {
		return Record{}, fmt.Errorf("initramfs record: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Record{}, fmt.Errorf("initramfs record: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		return Record{}, fmt.Errorf("initramfs record %s: not a regular file owned by root; ignored", f.Name())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return Record{}, fmt.Errorf("initramfs record: %w", err)
	}
	if len(data) > maxRecord {
		return Record{}, fmt.Errorf("initramfs record %s: longer than %d bytes", f.Name(), maxRecord)
	}
	r, err := parseRecord(data, name)
	if err != nil {
		return Record{}, fmt.Errorf("initramfs record %s: %w", f.Name(), err)
	}
	return r, nil
}

// parseRecord decodes a record and checks that it is the one of name.
func parseRecord(data []byte, name string) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, err
	}
	if r.Name != name {
		return Record{}, fmt.Errorf("it names volume %q", r.Name)
	}
	return r, nil
}
