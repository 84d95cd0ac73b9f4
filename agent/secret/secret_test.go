package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestRedaction(t *testing.T) {
	k, err := FromBytes([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		out := fmt.Sprintf(verb, k)
		if bytes.Contains([]byte(out), []byte("0123")) || bytes.Contains([]byte(out), []byte("3031")) {
			t.Errorf("%s leaks key material: %s", verb, out)
		}
	}
	wrapper := struct{ K *Key }{k}
	if out := fmt.Sprintf("%+v", wrapper); bytes.Contains([]byte(out), []byte("0123")) {
		t.Errorf("struct print leaks: %s", out)
	}
	if _, err := json.Marshal(wrapper); err == nil {
		t.Error("json.Marshal of a key succeeded, want refusal")
	}
}

func TestFromBytesZeroesSource(t *testing.T) {
	src := []byte{1, 2, 3, 4}
	k, err := FromBytes(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, make([]byte, 4)) {
		t.Errorf("source not zeroed: %v", src)
	}
	if !bytes.Equal(k.Bytes(), []byte{1, 2, 3, 4}) {
		t.Errorf("key bytes = %v", k.Bytes())
	}
}

func TestWipe(t *testing.T) {
	k, err := Random(64)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 64 || bytes.Equal(k.Bytes(), make([]byte, 64)) {
		t.Fatalf("random key looks wrong: len %d", k.Len())
	}
	mem := k.mem
	c, err := k.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equal(k) {
		t.Fatal("clone differs")
	}
	k.Wipe()
	k.Wipe()
	if k.Len() != 0 || k.Bytes() != nil {
		t.Error("wiped key still has content")
	}
	_ = mem // unmapped: touching it would fault, which is the point
	if c.Len() != 64 {
		t.Error("wiping the original wiped the clone")
	}
	c.Wipe()
	var zero Key
	zero.Wipe()
	if zero.Len() != 0 {
		t.Error("zero key not empty")
	}
}

func TestTruncate(t *testing.T) {
	k, err := New(100)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	for i := range k.Bytes() {
		k.Bytes()[i] = byte(i + 1)
	}
	k.Truncate(40)
	if k.Len() != 40 || len(k.Bytes()) != 40 || k.Bytes()[39] != 40 {
		t.Fatalf("after Truncate(40): len %d", k.Len())
	}
	if !bytes.Equal(k.mem[40:], make([]byte, len(k.mem)-40)) {
		t.Error("bytes past the new length not zeroed")
	}
	for _, n := range []int{-1, 41} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Truncate(%d) of a 40-byte key did not panic", n)
				}
			}()
			k.Truncate(n)
		}()
	}
}

// TestWipeThenCollect: a wiped key that becomes garbage must not be
// released a second time by its cleanup.
func TestWipeThenCollect(t *testing.T) {
	for range 64 {
		k, err := Random(32)
		if err != nil {
			t.Fatal(err)
		}
		k.Wipe()
	}
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// Fresh mappings may reuse the released addresses; they must survive.
	keep, err := Random(32)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if keep.Len() != 32 || len(keep.Bytes()) != 32 {
		t.Fatal("key damaged")
	}
	keep.Bytes()[0] ^= 1
	keep.Wipe()
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want, errWant string
	}{
		{"ok", write("ok", " pass\n", 0o600), "pass", ""},
		{"group readable", write("g", "x", 0o640), "", "chmod 600"},
		{"empty", write("e", "", 0o600), "", "is empty"},
		{"too big", write("b", strings.Repeat("x", 65), 0o400), "", "larger than 64"},
		{"missing", filepath.Join(dir, "nope"), "", "no such file"},
		{"directory", dir, "", "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ReadFile(tt.path, 64)
			if tt.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errWant) {
					t.Fatalf("got %v, want error with %q", err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			k, err = k.TrimSpace()
			if err != nil {
				t.Fatal(err)
			}
			if string(k.Bytes()) != tt.want {
				t.Fatalf("got %q", k.Bytes())
			}
		})
	}
}

func TestReadAll(t *testing.T) {
	for _, tc := range []struct {
		size  int
		hint  int64
		limit int64
		ok    bool
	}{
		{0, 0, 10, true},
		{0, -1, 10, true},
		{10, 10, 10, true},
		{10, -1, 10, true},
		{11, -1, 10, false},
		{11, 11, 10, false},
		{9000, -1, 1 << 20, true},
		{9000, 100, 1 << 20, true}, // a wrong hint only costs a copy
		{5000, -1, 4096, false},
		{4096, -1, 4096, true},
	} {
		in := strings.Repeat("x", tc.size)
		got, err := ReadAll(strings.NewReader(in), tc.hint, tc.limit)
		if (err == nil) != tc.ok || (tc.ok && string(got) != in) {
			t.Errorf("ReadAll(%d bytes, hint %d, limit %d) = %d bytes, %v", tc.size, tc.hint, tc.limit, len(got), err)
		}
	}
}

// TestLockedNoDump: a key's mapping is locked in memory and left out of
// core dumps, as /proc/self/smaps reports it. An unprivileged run under
// a small RLIMIT_MEMLOCK may get an unlocked key; only root must lock.
func TestLockedNoDump(t *testing.T) {
	k, err := New(100)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	flags := smapsFlags(t, uintptr(unsafe.Pointer(&k.mem[0])))
	if !slices.Contains(flags, "dd") {
		t.Errorf("mapping not excluded from core dumps: VmFlags %v", flags)
	}
	if os.Geteuid() == 0 && !slices.Contains(flags, "lo") {
		t.Errorf("mapping not locked: VmFlags %v", flags)
	}
}

// smapsFlags returns the VmFlags of the mapping that starts at addr.
func smapsFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	in := false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if start, _, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			v, err := strconv.ParseUint(start, 16, 64)
			in = err == nil && uintptr(v) == addr
			continue
		}
		if in && f[0] == "VmFlags:" {
			return f[1:]
		}
	}
	t.Fatalf("no mapping at %#x in smaps", addr)
	return nil
}
