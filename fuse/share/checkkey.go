package share

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/nametransform"
	"kmsagent/kmsclient/secret"
)

// maxChecked bounds the names CheckKey tries: a few suffice to tell a
// wrong key (no name decrypts) from a foreign file (one does not).
const maxChecked = 64

// ErrWrongKey reports a master key that decrypts none of the names in the
// root of a tree.
var ErrWrongKey = errors.New("the master key does not decrypt the names in the cipher directory: wrong key for this share")

// CheckKey tells whether master is the key of the tree in dir by
// decrypting the encrypted names in its root: gocryptfs would mount a
// wrong key and show an empty tree. A root with no encrypted names cannot
// be checked and passes.
func CheckKey(dir string, master *secret.Key) error {
	core, err := cryptocore.New(master)
	if err != nil {
		return err
	}
	defer core.Wipe()
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("cipher directory: %w", err)
	}
	defer d.Close()
	iv, err := nametransform.ReadDirIVAt(int(d.Fd()))
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	nt := nametransform.New(core.NameBlock())
	tried := 0
	for _, name := range names {
		if tried == maxChecked {
			break
		}
		cName := name
		switch nametransform.NameType(name) {
		case nametransform.NameRegular:
		case nametransform.NameLongContent:
			cName, err = nametransform.ReadLongNameAt(int(d.Fd()), name)
			if err != nil {
				continue
			}
		default:
			continue
		}
		if !cipherNameLength(len(cName)) {
			continue // a plaintext file someone put there, not a cipher name
		}
		tried++
		if _, err := nt.DecryptName(cName, iv); err == nil {
			return nil
		}
	}
	if tried == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", dir, ErrWrongKey)
}

// cipherNameLength reports whether n is the Raw64 length of a whole number
// of AES blocks, as every EME cipher name is.
func cipherNameLength(n int) bool {
	bytes := n * 6 / 8
	return n > 0 && bytes%16 == 0 && base64.RawURLEncoding.EncodedLen(bytes) == n
}
