package dm

import (
	"fmt"
	"strings"
)

// Target is one line of a device-mapper table: a range of the device in
// 512-byte sectors mapped by a target type with its parameter string.
type Target struct {
	Start  uint64 // first sector of the range
	Length uint64 // sectors in the range
	Type   string // target type, e.g. "crypt", "linear"
	Params string // the target's table (or status) parameters
	// Status is dm_target_spec.status as the kernel reports it in a
	// status reply; it is ignored when loading.
	Status int32
}

// String renders the target like a line of `dmsetup table`.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// validate checks what the kernel would refuse, so the error names the
// target instead of an EINVAL from the ioctl.
func (t Target) validate() error {
	switch {
	case t.Type == "":
		return fmt.Errorf("target at sector %d has no type", t.Start)
	case len(t.Type) >= maxTypeName:
		return fmt.Errorf("target type %q is longer than %d bytes", t.Type, maxTypeName-1)
	case strings.IndexByte(t.Type, 0) >= 0 || strings.IndexByte(t.Params, 0) >= 0:
		return fmt.Errorf("target at sector %d contains a NUL byte", t.Start)
	case t.Length == 0:
		return fmt.Errorf("target %s at sector %d has zero length", t.Type, t.Start)
	}
	return nil
}

// encodeTargets lays out targets as a DM_TABLE_LOAD payload: each
// dm_target_spec followed by its NUL-terminated parameters, padded so the
// next spec is 8-byte aligned; next is relative to the current spec, as
// the kernel expects on load.
func encodeTargets(targets []Target) ([]byte, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("table has no targets")
	}
	size := 0
	for i, t := range targets {
		if err := t.validate(); err != nil {
			return nil, err
		}
		if i > 0 {
			prev := targets[i-1]
			if t.Start != prev.Start+prev.Length {
				return nil, fmt.Errorf("target %d starts at sector %d, not where target %d ends (%d)", i, t.Start, i-1, prev.Start+prev.Length)
			}
		} else if t.Start != 0 {
			return nil, fmt.Errorf("first target starts at sector %d, not 0", t.Start)
		}
		size += specRecordSize(t)
	}
	b := make([]byte, size)
	off := 0
	for _, t := range targets {
		n := specRecordSize(t)
		rec := b[off : off+n]
		native.PutUint64(rec[offSpecStart:], t.Start)
		native.PutUint64(rec[offSpecLength:], t.Length)
		native.PutUint32(rec[offSpecNext:], uint32(n))
		copy(rec[offSpecType:offSpecType+maxTypeName], t.Type)
		copy(rec[specSize:], t.Params)
		off += n
	}
	return b, nil
}

// specRecordSize is the aligned size of a spec with its parameters.
func specRecordSize(t Target) int { return align8(specSize + len(t.Params) + 1) }

// decodeTargets parses the payload of a DM_TABLE_STATUS reply: count
// specs, where next is relative to the start of the payload (not to the
// current spec, unlike on load). The reply comes from the kernel, but it
// is bounds-checked as if it did not, and next must move forward so a
// corrupt reply cannot loop.
func decodeTargets(data []byte, count uint32) ([]Target, error) {
	if uint64(count) > uint64(len(data)/specSize) {
		return nil, fmt.Errorf("reply claims %d targets in %d bytes", count, len(data))
	}
	targets := make([]Target, 0, count)
	off := 0
	for i := uint32(0); i < count; i++ {
		if off+specSize > len(data) {
			return nil, fmt.Errorf("target %d: spec at offset %d runs past the %d-byte reply", i, off, len(data))
		}
		rec := data[off:]
		typ, err := cString(rec[offSpecType : offSpecType+maxTypeName])
		if err != nil {
			return nil, fmt.Errorf("target %d: type: %w", i, err)
		}
		params, err := cString(rec[specSize:])
		if err != nil {
			return nil, fmt.Errorf("target %d: parameters: %w", i, err)
		}
		targets = append(targets, Target{
			Start:  native.Uint64(rec[offSpecStart:]),
			Length: native.Uint64(rec[offSpecLength:]),
			Status: int32(native.Uint32(rec[offSpecStatus:])),
			Type:   typ,
			Params: params,
		})
		if i+1 == count {
			break
		}
		next := int(native.Uint32(rec[offSpecNext:]))
		if next < off+specSize+len(params)+1 {
			return nil, fmt.Errorf("target %d: next offset %d does not move past the spec at %d", i, next, off)
		}
		off = next
	}
	return targets, nil
}
