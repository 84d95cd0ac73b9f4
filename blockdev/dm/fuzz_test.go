package dm

import (
	"encoding/binary"
	"testing"
)

// FuzzDecodeReply feeds arbitrary bytes as a kernel reply buffer through
// everything that parses one: header, payload bounds, device list and
// table status. None may panic or loop; what they accept must be
// consistent with the buffer.
func FuzzDecodeReply(f *testing.F) {
	seed := make([]byte, headerSize)
	(&header{DataSize: headerSize, DataStart: headerSize}).marshal(seed)
	f.Add(seed, uint32(0))
	withTargets := append(seed[:headerSize:headerSize], statusPayload([]Target{
		{Length: 8, Type: "crypt", Params: crypt1},
		{Start: 8, Length: 8, Type: "linear", Params: "254:0 0"},
	})...)
	binary.LittleEndian.PutUint32(withTargets[offDataSize:], uint32(len(withTargets)))
	f.Add(withTargets, uint32(2))
	list := make([]byte, headerSize+48)
	(&header{DataSize: uint32(len(list)), DataStart: headerSize}).marshal(list)
	copy(list[headerSize:], []byte{5, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 't', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 'u', 0})
	f.Add(list, uint32(1))

	f.Fuzz(func(t *testing.T, b []byte, count uint32) {
		h, err := unmarshalHeader(b)
		if err != nil {
			return
		}
		data, err := h.payload(b)
		if err != nil {
			return
		}
		if devs, err := decodeNameList(data); err == nil {
			if len(devs) > len(data)/nameListMinSize+1 {
				t.Fatalf("%d devices from %d bytes", len(devs), len(data))
			}
			for _, d := range devs {
				if len(d.Name)+len(d.UUID) > len(data) {
					t.Fatal("entry larger than the reply")
				}
			}
		}
		if targets, err := decodeTargets(data, count); err == nil {
			if uint64(len(targets)) != uint64(count) {
				t.Fatalf("%d targets decoded, %d claimed", len(targets), count)
			}
		}
	})
}

// FuzzTargetsRoundTrip encodes targets for loading and decodes them as a
// status reply would carry them: what is accepted must come back equal.
func FuzzTargetsRoundTrip(f *testing.F) {
	f.Add("crypt", crypt1, uint64(8192), "linear", "254:0 0", uint64(1))
	f.Add("error", "", uint64(1), "zero", "", uint64(1<<40))
	f.Fuzz(func(t *testing.T, type1, params1 string, len1 uint64, type2, params2 string, len2 uint64) {
		in := []Target{
			{Start: 0, Length: len1, Type: type1, Params: params1},
			{Start: len1, Length: len2, Type: type2, Params: params2},
		}
		load, err := encodeTargets(in)
		if err != nil {
			return
		}
		// A status reply carries the same records with next made
		// relative to the payload start.
		status := append([]byte(nil), load...)
		first := native.Uint32(status[offSpecNext:])
		native.PutUint32(status[int(first)+offSpecNext:], uint32(len(status)))
		out, err := decodeTargets(status, 2)
		if err != nil {
			t.Fatalf("decode of encoded targets: %v", err)
		}
		for i := range in {
			if out[i] != in[i] {
				t.Fatalf("target %d: got %+v, want %+v", i, out[i], in[i])
			}
		}
	})
}
