package dm

import "fmt"

// Device is one entry of the device list.
type Device struct {
	Name string
	UUID string // empty when the device has none or the kernel does not report it
	Dev  uint64 // device number in the kernel's huge encoding; see DevInfo.Dev
	// EventNr is the device's event counter; zero on kernels before
	// interface 4.37, which do not report it.
	EventNr uint32
}

// decodeNameList parses the payload of a DM_LIST_DEVICES reply: a chain
// of struct dm_name_list records, each "next" bytes after the previous
// (0 ends the chain). After the NUL of each name, 8-byte aligned, newer
// kernels put event_nr and a flags word, and, when asked with
// DM_UUID_FLAG and flags says so, the uuid. No devices is an empty
// payload (data_size == data_start) or, from older kernels, a first
// record with dev 0.
func decodeNameList(data []byte) ([]Device, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if len(data) < 8 {
		return nil, fmt.Errorf("device list reply of %d bytes is too short", len(data))
	}
	if native.Uint64(data) == 0 {
		return nil, nil
	}
	var devs []Device
	off := 0
	for {
		if len(data)-off < nameListMinSize {
			return nil, fmt.Errorf("device list entry at offset %d runs past the %d-byte reply", off, len(data))
		}
		next := native.Uint32(data[off+8:])
		end := len(data)
		if next != 0 {
			if next <= nameListMinSize {
				return nil, fmt.Errorf("device list entry at offset %d: next %d points inside the entry", off, next)
			}
			if uint64(next) > uint64(len(data)-off) {
				return nil, fmt.Errorf("device list entry at offset %d: next %d runs past the %d-byte reply", off, next, len(data))
			}
			end = off + int(next)
		}
		rec := data[off:end]
		name, err := cString(rec[nameListMinSize:])
		if err != nil {
			return nil, fmt.Errorf("device list entry at offset %d: name: %w", off, err)
		}
		d := Device{Name: name, Dev: native.Uint64(rec)}
		// event_nr and flags sit 8-byte aligned after the name, inside
		// this record; records from old kernels end right after the name.
		extra := align8(nameListMinSize + len(name) + 1)
		if extra+8 <= len(rec) {
			d.EventNr = native.Uint32(rec[extra:])
			flags := native.Uint32(rec[extra+4:])
			if flags&nameListHasUUID != 0 {
				uuid, err := cString(rec[extra+8:])
				if err != nil {
					return nil, fmt.Errorf("device list entry %q: uuid: %w", name, err)
				}
				d.UUID = uuid
			}
		}
		devs = append(devs, d)
		if next == 0 {
			return devs, nil
		}
		off = end
	}
}
