package crypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per LUKS UUID. The check that a volume is
// not open yet and its activation are one step under this lock, so two
// mounts of the same volume under different names cannot both pass the
// check. The files are tiny and /run is emptied at boot.
const lockDir = "/run/kmsagent/crypt"

// lockVolume takes the open lock of the volume luksUUID, or says another
// process holds it. The caller closes the returned file to release it.
func lockVolume(luksUUID string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("volume lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(lockDir, luksUUID+".lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("volume lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &OpeningError{LUKSUUID: luksUUID}
		}
		return nil, fmt.Errorf("volume lock: %w", err)
	}
	return f, nil
}
