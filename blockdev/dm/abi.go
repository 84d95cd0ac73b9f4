package dm

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Layout of struct dm_ioctl (include/uapi/linux/dm-ioctl.h). The struct
// is the same on every architecture: all members are naturally aligned
// and the trailing data[7] pads it to a multiple of 8.
const (
	headerSize = 312

	offVersion     = 0
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = 176

	nameLen = 128 // DM_NAME_LEN, including the terminating NUL
	uuidLen = 129 // DM_UUID_LEN, including the terminating NUL
)

// Layout of struct dm_target_spec; the target's parameter string follows
// it, NUL-terminated, and the next spec starts 8-byte aligned.
const (
	specSize        = 40
	offSpecStart    = 0
	offSpecLength   = 8
	offSpecStatus   = 16
	offSpecNext     = 20
	offSpecType     = 24
	maxTypeName     = 16 // DM_MAX_TYPE_NAME, including the NUL
	specAlign       = 8
	msgSectorSize   = 8  // struct dm_target_msg: __u64 sector, then the message
	nameListMinSize = 12 // struct dm_name_list: __u64 dev, __u32 next, then the name
)

// Flags of dm_ioctl.flags. Those not exported by golang.org/x/sys/unix
// under a usable name are spelled out here with their header names.
const (
	flagReadOnly        = 1 << 0  // DM_READONLY_FLAG
	flagSuspend         = 1 << 1  // DM_SUSPEND_FLAG
	flagStatusTable     = 1 << 4  // DM_STATUS_TABLE_FLAG
	flagActivePresent   = 1 << 5  // DM_ACTIVE_PRESENT_FLAG
	flagInactivePresent = 1 << 6  // DM_INACTIVE_PRESENT_FLAG
	flagBufferFull      = 1 << 8  // DM_BUFFER_FULL_FLAG
	flagUeventGenerated = 1 << 13 // DM_UEVENT_GENERATED_FLAG
	flagUUID            = 1 << 14 // DM_UUID_FLAG
	flagSecureData      = 1 << 15 // DM_SECURE_DATA_FLAG
	flagDeferredRemove  = 1 << 17 // DM_DEFERRED_REMOVE

	nameListHasUUID = 1 // DM_NAME_LIST_FLAG_HAS_UUID
)

// native is the byte order of the running kernel, which is the order of
// every integer in the ioctl buffers.
var native = binary.NativeEndian

// header is struct dm_ioctl in Go form.
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// marshal writes h into the first headerSize bytes of b.
func (h *header) marshal(b []byte) error {
	if len(b) < headerSize {
		return fmt.Errorf("ioctl buffer of %d bytes is shorter than struct dm_ioctl (%d)", len(b), headerSize)
	}
	if len(h.Name) >= nameLen {
		return fmt.Errorf("device name of %d bytes does not fit DM_NAME_LEN (%d with NUL)", len(h.Name), nameLen)
	}
	if len(h.UUID) >= uuidLen {
		return fmt.Errorf("device uuid of %d bytes does not fit DM_UUID_LEN (%d with NUL)", len(h.UUID), uuidLen)
	}
	clear(b[:headerSize])
	for i, v := range h.Version {
		native.PutUint32(b[offVersion+4*i:], v)
	}
	native.PutUint32(b[offDataSize:], h.DataSize)
	native.PutUint32(b[offDataStart:], h.DataStart)
	native.PutUint32(b[offTargetCount:], h.TargetCount)
	native.PutUint32(b[offOpenCount:], uint32(h.OpenCount))
	native.PutUint32(b[offFlags:], h.Flags)
	native.PutUint32(b[offEventNr:], h.EventNr)
	native.PutUint64(b[offDev:], h.Dev)
	copy(b[offName:offName+nameLen], h.Name)
	copy(b[offUUID:offUUID+uuidLen], h.UUID)
	return nil
}

// unmarshalHeader reads struct dm_ioctl from the start of b.
func unmarshalHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize {
		return h, fmt.Errorf("ioctl reply of %d bytes is shorter than struct dm_ioctl (%d)", len(b), headerSize)
	}
	for i := range h.Version {
		h.Version[i] = native.Uint32(b[offVersion+4*i:])
	}
	h.DataSize = native.Uint32(b[offDataSize:])
	h.DataStart = native.Uint32(b[offDataStart:])
	h.TargetCount = native.Uint32(b[offTargetCount:])
	h.OpenCount = int32(native.Uint32(b[offOpenCount:]))
	h.Flags = native.Uint32(b[offFlags:])
	h.EventNr = native.Uint32(b[offEventNr:])
	h.Dev = native.Uint64(b[offDev:])
	var err error
	if h.Name, err = cString(b[offName : offName+nameLen]); err != nil {
		return h, fmt.Errorf("dm_ioctl.name: %w", err)
	}
	if h.UUID, err = cString(b[offUUID : offUUID+uuidLen]); err != nil {
		return h, fmt.Errorf("dm_ioctl.uuid: %w", err)
	}
	return h, nil
}

// payload returns the reply's data area, b[data_start:data_size], after
// checking both against the buffer the kernel was given.
func (h *header) payload(b []byte) ([]byte, error) {
	start, end := uint64(h.DataStart), uint64(h.DataSize)
	if end > uint64(len(b)) {
		return nil, fmt.Errorf("reply data_size %d exceeds the %d-byte buffer", end, len(b))
	}
	if start < headerSize || start > end {
		return nil, fmt.Errorf("reply data_start %d outside [%d, data_size %d]", start, headerSize, end)
	}
	return b[start:end], nil
}

// cString returns the NUL-terminated string at the start of b; a string
// without terminator in b is malformed.
func cString(b []byte) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", fmt.Errorf("string of %d bytes is not NUL-terminated", len(b))
	}
	return string(b[:i]), nil
}

// align8 rounds n up to the alignment the kernel uses between records.
func align8(n int) int { return (n + specAlign - 1) &^ (specAlign - 1) }
