package source

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"kmsagent/agent/errkind"
	"kmsagent/agent/uuid"
)

// Kind is the kind of a source.
type Kind int

const (
	// Path is an absolute path to a block device or an image file.
	Path Kind = iota + 1
	// UUID is a LUKS2 header UUID (UUID=...).
	UUID
	// EVS is a Huawei Cloud EVS volume id (evs:...).
	EVS
)

// SerialLen is how many characters of an EVS volume id a virtio disk
// carries as its serial (VIRTIO_BLK_ID_BYTES).
const SerialLen = 20

// Spec is a parsed source.
type Spec struct {
	Kind Kind
	// Value is the path, the UUID in canonical lower-case form, or the
	// volume id as written.
	Value string
}

// String returns the source in the form Parse reads.
func (s Spec) String() string {
	switch s.Kind {
	case UUID:
		return "UUID=" + s.Value
	case EVS:
		return "evs:" + s.Value
	}
	return s.Value
}

// serial is the part of an EVS volume id a disk carries.
func (s Spec) serial() string { return s.Value[:SerialLen] }

// Sentinel errors, for errors.Is on the *Error that wraps them.
var (
	// ErrInvalidSpec means the source is malformed: fix the configuration.
	ErrInvalidSpec = errors.New("invalid source")
	// ErrNotFound means no device matches now. It is normal at boot and
	// before a disk is attached: retry when a disk appears.
	ErrNotFound = errkind.New(errkind.DeviceMissing, "no device found")
	// ErrAmbiguous means more than one device matches; Error.Devices
	// lists them.
	ErrAmbiguous = errors.New("more than one device matches")
	// ErrNotBlockDevice means a path source exists but is neither a block
	// device nor a regular file.
	ErrNotBlockDevice = errors.New("neither a block device nor a regular file")
)

// Error is the error of Parse, Resolve and Matches.
type Error struct {
	Spec    string // the source as configured
	Err     error  // a sentinel above, or the underlying error
	Detail  string // what was looked at and what to check
	Devices []string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("source %q: %v", e.Spec, e.Err)
	}
	return fmt.Sprintf("source %q: %v: %s", e.Spec, e.Err, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(spec, format string, args ...any) error {
	return &Error{Spec: spec, Err: ErrInvalidSpec, Detail: fmt.Sprintf(format, args...)}
}

// Parse checks a source and returns it parsed.
func Parse(s string) (Spec, error) {
	switch {
	case s == "":
		return Spec{}, invalid(s, "empty; use a device path, UUID=<LUKS2 UUID> or evs:<volume id>")
	case strings.HasPrefix(s, "UUID="):
		u, err := uuid.Parse(s[len("UUID="):])
		if err != nil {
			return Spec{}, invalid(s, "%q is not a UUID (8-4-4-4-12 hex digits, as cryptsetup luksUUID prints it)", s[len("UUID="):])
		}
		return Spec{Kind: UUID, Value: u.String()}, nil
	case strings.HasPrefix(s, "evs:"):
		id := s[len("evs:"):]
		if len(id) < SerialLen || len(id) > 64 || strings.Trim(id, "0123456789abcdefABCDEF-") != "" {
			return Spec{}, invalid(s, "%q is not an EVS volume id (a UUID as the console shows it; at least its first %d characters)", id, SerialLen)
		}
		return Spec{Kind: EVS, Value: id}, nil
	case filepath.IsAbs(s):
		return Spec{Kind: Path, Value: s}, nil
	}
	if key, _, ok := strings.Cut(s, "="); ok && key != "" && strings.Trim(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == "" {
		return Spec{}, invalid(s, "%s= is not supported; use UUID=<LUKS2 UUID>, evs:<volume id> or an absolute path", key)
	}
	return Spec{}, invalid(s, "a path must be absolute; or use UUID=<LUKS2 UUID> or evs:<volume id>")
}
