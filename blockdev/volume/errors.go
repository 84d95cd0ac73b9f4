package volume

import (
	"errors"
	"fmt"
)

// The errors below say what is wrong; the command line adds what to do
// about it (which flag, which command).

// ErrWrongVolume is a token bound to another volume than the header it
// is in (a BindingError).
var ErrWrongVolume = errors.New("token bound to another volume")

// BindingError is a token whose binding is not its header's UUID: the
// token, or the header, was copied from another volume.
type BindingError struct {
	TokenID       int
	Binding, UUID string
}

func (e *BindingError) Error() string {
	return fmt.Sprintf("token %d is bound to volume %s but this header's UUID is %s: the token (or header) was copied from another volume", e.TokenID, e.Binding, e.UUID)
}

func (e *BindingError) Unwrap() error { return ErrWrongVolume }

// AlignmentError is a device whose data area is not a whole number of
// sectors.
type AlignmentError struct {
	DataSize   int64
	SectorSize int
}

func (e *AlignmentError) Error() string {
	return fmt.Sprintf("the data area (%d bytes) is not a multiple of the %d-byte sector size", e.DataSize, e.SectorSize)
}

// EnrolledError is a volume that has a kmsagent token already.
type EnrolledError struct {
	TokenID int
	KeyID   string
}

func (e *EnrolledError) Error() string {
	return fmt.Sprintf("already enrolled (token %d, KMS key %s)", e.TokenID, e.KeyID)
}

// LastKeyslotError refuses to remove the only keyslot that opens the
// volume.
type LastKeyslotError struct {
	Unbound []int // keyslots that hold other keys
}

func (e *LastKeyslotError) Error() string {
	note := ""
	if len(e.Unbound) > 0 {
		note = fmt.Sprintf(" (unbound keyslots %v hold other keys and do not open it)", e.Unbound)
	}
	return "refusing to remove the only keyslot that opens the volume" + note + "; add a passphrase first"
}
