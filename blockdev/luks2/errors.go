package luks2

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. Returned errors wrap them with the
// detail (which field, which keyslot).
var (
	// ErrNotLUKS2 means neither header copy carries the LUKS2 magic.
	ErrNotLUKS2 = errors.New("luks2: not a LUKS2 device")
	// ErrInvalidHeader means a header was found but fails validation or
	// its checksum; the wrapped text names the field.
	ErrInvalidHeader = errors.New("luks2: invalid header")
	// ErrWrongPassphrase means the passphrase opens no keyslot tried.
	ErrWrongPassphrase = errors.New("luks2: wrong passphrase")
	// ErrWrongVolumeKey means a volume key does not match the digest.
	ErrWrongVolumeKey = errors.New("luks2: volume key does not match the header digest")
	// ErrUnboundKeyslot means a keyslot's digest is not assigned to the
	// data segment (cryptsetup luksAddKey --unbound): the key it holds is
	// not the volume key, so it does not open the volume.
	ErrUnboundKeyslot = errors.New("luks2: keyslot is unbound (not assigned to the data segment)")
	// ErrNoSuchKeyslot means the keyslot id is not in use.
	ErrNoSuchKeyslot = errors.New("luks2: no such keyslot")
	// ErrNoSuchToken means the token id is not in use.
	ErrNoSuchToken = errors.New("luks2: no such token")
	// ErrNoFreeKeyslot means all 32 keyslot ids are taken.
	ErrNoFreeKeyslot = errors.New("luks2: no free keyslot")
	// ErrNoSpace means the keyslot area or the JSON area is full.
	ErrNoSpace = errors.New("luks2: not enough space in the header")
	// ErrUnsupported means the header uses something this package cannot
	// do (an unknown KDF, cipher or keyslot type); reading still works.
	ErrUnsupported = errors.New("luks2: unsupported")
	// ErrHeaderOverlap means a data segment starts inside the header
	// (metadata or keyslot area), as only a detached header may.
	ErrHeaderOverlap = errors.New("luks2: data segment overlaps the header")
	// ErrUnmetRequirements means config.requirements.mandatory names
	// features (reencryption, unknown ones) that forbid changing the header.
	ErrUnmetRequirements = errors.New("luks2: header has mandatory requirements")
	// ErrConcurrentUpdate means the header on the device changed since it
	// was read; re-read it and retry.
	ErrConcurrentUpdate = errors.New("luks2: header changed on the device since it was read")
)

// invalid reports a validation failure at a JSON path, e.g.
// "keyslots.1.area.offset: not a decimal string".
func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidHeader, path, fmt.Sprintf(format, args...))
}
