package dm

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// The expected buffers below are written out byte by byte for a
// little-endian machine, from the offsets in include/uapi/linux/dm-ioctl.h.
func requireLittleEndian(t *testing.T) {
	t.Helper()
	if native.Uint16([]byte{1, 0}) != 1 {
		t.Skip("hand-computed layouts are little-endian")
	}
}

func TestHeaderMarshalLayout(t *testing.T) {
	requireLittleEndian(t)
	h := header{
		Version:     [3]uint32{4, 0, 0},
		DataSize:    328,
		DataStart:   312,
		TargetCount: 1,
		OpenCount:   -1,
		Flags:       flagSecureData | flagReadOnly,
		EventNr:     7,
		Dev:         0x0000_0000_0010_fe05,
		Name:        "test",
		UUID:        "CRYPT-LUKS2-x-test",
	}
	got := make([]byte, headerSize)
	for i := range got {
		got[i] = 0xAA // marshal must overwrite every byte it owns
	}
	if err := h.marshal(got); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, headerSize)
	copy(want[0:], []byte{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // version 4.0.0
	copy(want[12:], []byte{0x48, 0x01, 0, 0})                  // data_size 328
	copy(want[16:], []byte{0x38, 0x01, 0, 0})                  // data_start 312
	copy(want[20:], []byte{1, 0, 0, 0})                        // target_count
	copy(want[24:], []byte{0xff, 0xff, 0xff, 0xff})            // open_count -1
	copy(want[28:], []byte{0x01, 0x80, 0, 0})                  // flags
	copy(want[32:], []byte{7, 0, 0, 0})                        // event_nr, then 4 bytes padding
	copy(want[40:], []byte{0x05, 0xfe, 0x10, 0, 0, 0, 0, 0})   // dev
	copy(want[48:], "test")                                    // name[128]
	copy(want[176:], "CRYPT-LUKS2-x-test")                     // uuid[129], data[7]
	if !bytes.Equal(got, want) {
		t.Fatalf("layout differs at byte %d\n got %x\nwant %x", firstDiff(got, want), got, want)
	}
	back, err := unmarshalHeader(got)
	if err != nil {
		t.Fatal(err)
	}
	if back != h {
		t.Fatalf("round trip: got %+v, want %+v", back, h)
	}
}

func TestHeaderLimits(t *testing.T) {
	tests := []struct {
		name string
		h    header
		size int
		ok   bool
	}{
		{"name fits", header{Name: strings.Repeat("n", 127)}, headerSize, true},
		{"name too long", header{Name: strings.Repeat("n", 128)}, headerSize, false},
		{"uuid fits", header{UUID: strings.Repeat("u", 128)}, headerSize, true},
		{"uuid too long", header{UUID: strings.Repeat("u", 129)}, headerSize, false},
		{"short buffer", header{}, headerSize - 1, false},
	}
	for _, tt := range tests {
		err := tt.h.marshal(make([]byte, tt.size))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestUnmarshalHeaderRejects(t *testing.T) {
	full := make([]byte, headerSize)
	for i := offName; i < offName+nameLen; i++ {
		full[i] = 'x'
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"short", make([]byte, headerSize-1)},
		{"name without NUL", full},
	}
	for _, tt := range tests {
		if _, err := unmarshalHeader(tt.b); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestPayloadBounds(t *testing.T) {
	buf := make([]byte, 400)
	tests := []struct {
		start, size uint32
		ok          bool
	}{
		{312, 400, true},
		{312, 312, true},
		{312, 401, false},
		{311, 400, false},
		{390, 380, false},
	}
	for _, tt := range tests {
		h := header{DataStart: tt.start, DataSize: tt.size}
		_, err := h.payload(buf)
		if (err == nil) != tt.ok {
			t.Errorf("data_start %d data_size %d: err = %v, want ok=%v", tt.start, tt.size, err, tt.ok)
		}
	}
}

const crypt1 = "aes-xts-plain64 :64:logon:kmsagent:test 0 /dev/vda 0" // 52 bytes

func TestEncodeTargetsLayout(t *testing.T) {
	requireLittleEndian(t)
	got, err := encodeTargets([]Target{
		{Start: 0, Length: 8192, Type: "crypt", Params: crypt1},
		{Start: 8192, Length: 1, Type: "error", Params: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	// spec 1: 40 + 52 + NUL = 93, aligned to 96; spec 2: 40 + NUL = 41 -> 48.
	want := make([]byte, 96+48)
	copy(want[8:], []byte{0x00, 0x20})   // length 8192
	copy(want[20:], []byte{96, 0, 0, 0}) // next, relative to this spec
	copy(want[24:], "crypt")
	copy(want[40:], crypt1)
	w2 := want[96:]
	copy(w2[0:], []byte{0x00, 0x20}) // start 8192
	copy(w2[8:], []byte{1})          // length 1
	copy(w2[20:], []byte{48, 0, 0, 0})
	copy(w2[24:], "error")
	if !bytes.Equal(got, want) {
		t.Fatalf("layout differs at byte %d\n got %x\nwant %x", firstDiff(got, want), got, want)
	}
}

func TestEncodeTargetsRejects(t *testing.T) {
	tests := []struct {
		name    string
		targets []Target
	}{
		{"empty", nil},
		{"no type", []Target{{Length: 1}}},
		{"long type", []Target{{Length: 1, Type: strings.Repeat("t", 16)}}},
		{"zero length", []Target{{Type: "zero"}}},
		{"NUL in params", []Target{{Length: 1, Type: "zero", Params: "a\x00b"}}},
		{"not at 0", []Target{{Start: 1, Length: 1, Type: "zero"}}},
		{"gap", []Target{{Length: 1, Type: "zero"}, {Start: 2, Length: 1, Type: "zero"}}},
		{"overlap", []Target{{Length: 2, Type: "zero"}, {Start: 1, Length: 1, Type: "zero"}}},
	}
	for _, tt := range tests {
		if _, err := encodeTargets(tt.targets); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

// statusPayload lays targets out as a DM_TABLE_STATUS reply, where next
// is relative to the payload start.
func statusPayload(targets []Target) []byte {
	var b []byte
	for _, t := range targets {
		rec := make([]byte, specRecordSize(t))
		binary.LittleEndian.PutUint64(rec[0:], t.Start)
		binary.LittleEndian.PutUint64(rec[8:], t.Length)
		binary.LittleEndian.PutUint32(rec[16:], uint32(t.Status))
		binary.LittleEndian.PutUint32(rec[20:], uint32(len(b)+len(rec)))
		copy(rec[24:40], t.Type)
		copy(rec[40:], t.Params)
		b = append(b, rec...)
	}
	return b
}

func TestDecodeTargets(t *testing.T) {
	requireLittleEndian(t)
	// One crypt target as the kernel reports its table: the backing
	// device as major:minor, the key as its keyring reference.
	reply := make([]byte, 96)
	copy(reply[8:], []byte{0x00, 0x20})
	copy(reply[20:], []byte{96, 0, 0, 0})
	copy(reply[24:], "crypt")
	copy(reply[40:], "aes-xts-plain64 :64:logon:kmsagent:test 0 254:0 0")
	got, err := decodeTargets(reply, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{{Start: 0, Length: 8192, Type: "crypt", Params: "aes-xts-plain64 :64:logon:kmsagent:test 0 254:0 0"}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	multi := []Target{
		{Start: 0, Length: 10, Type: "linear", Params: "254:0 0", Status: 0},
		{Start: 10, Length: 5, Type: "crypt", Params: crypt1, Status: -5},
		{Start: 15, Length: 1, Type: "error", Params: ""},
	}
	got, err = decodeTargets(statusPayload(multi), 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range multi {
		if got[i] != multi[i] {
			t.Errorf("target %d: got %+v, want %+v", i, got[i], multi[i])
		}
	}
}

func TestDecodeTargetsRejects(t *testing.T) {
	requireLittleEndian(t)
	good := statusPayload([]Target{{Length: 1, Type: "zero"}, {Start: 1, Length: 1, Type: "zero"}})
	backwards := bytes.Clone(good)
	binary.LittleEndian.PutUint32(backwards[20:], 0) // next points at itself
	noNUL := bytes.Clone(good[:48])
	for i := 40; i < 48; i++ {
		noNUL[i] = 'x'
	}
	tests := []struct {
		name  string
		b     []byte
		count uint32
	}{
		{"too many targets", good, 3},
		{"huge count", good, 1 << 31},
		{"next loops", backwards, 2},
		{"params without NUL", noNUL, 1},
		{"truncated spec", good[:30], 1},
	}
	for _, tt := range tests {
		if _, err := decodeTargets(tt.b, tt.count); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestDecodeNameList(t *testing.T) {
	requireLittleEndian(t)
	// Entry 1 at 0: dev 254:5, name "test", then at 24 event_nr 3, flags
	// HAS_UUID, at 32 the uuid, record padded to 48. Entry 2 at 48: dev
	// 254:6, name "busy", at 72 event_nr 0, flags DOESNT_HAVE_UUID, end 80.
	b := make([]byte, 80)
	copy(b[0:], []byte{0x05, 0xfe})
	copy(b[8:], []byte{48, 0, 0, 0})
	copy(b[12:], "test")
	copy(b[24:], []byte{3, 0, 0, 0, 1, 0, 0, 0})
	copy(b[32:], "CRYPT-u-test")
	copy(b[48:], []byte{0x06, 0xfe})
	copy(b[60:], "busy")
	copy(b[72:], []byte{0, 0, 0, 0, 2, 0, 0, 0})
	got, err := decodeNameList(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Device{
		{Name: "test", UUID: "CRYPT-u-test", Dev: 0xfe05, EventNr: 3},
		{Name: "busy", Dev: 0xfe06},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if d := (DevInfo{Dev: got[0].Dev}); d.Major() != 254 || d.Minor() != 5 {
		t.Errorf("dev decodes to %d:%d, want 254:5", d.Major(), d.Minor())
	}
}

func TestDecodeNameListOldAndEmpty(t *testing.T) {
	requireLittleEndian(t)
	// Kernels before interface 4.37 end each record after the name.
	old := make([]byte, 24+24)
	copy(old[0:], []byte{0x00, 0xfd})
	copy(old[8:], []byte{24, 0, 0, 0})
	copy(old[12:], "a")
	copy(old[24:], []byte{0x01, 0xfd})
	copy(old[36:], "bb")
	got, err := decodeNameList(old[:40])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "bb" || got[1].EventNr != 0 {
		t.Fatalf("got %+v", got)
	}
	for _, size := range []int{0, 8, 16} {
		none, err := decodeNameList(make([]byte, size))
		if err != nil || len(none) != 0 {
			t.Fatalf("empty list of %d bytes: %+v, %v", size, none, err)
		}
	}
}

func TestDecodeNameListRejects(t *testing.T) {
	requireLittleEndian(t)
	entry := func(next uint32, name string, size int) []byte {
		b := make([]byte, size)
		b[0] = 1
		binary.LittleEndian.PutUint32(b[8:], next)
		copy(b[12:], name)
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"short", make([]byte, 4)},
		{"truncated entry", entry(0, "", 24)[:10]},
		{"next past end", entry(64, "a", 24)},
		{"next inside entry", append(entry(4, "abc", 24), entry(0, "d", 24)...)},
		{"name without NUL", entry(0, "abcdefghijkl", 24)},
	}
	for _, tt := range tests {
		if _, err := decodeNameList(tt.b); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
