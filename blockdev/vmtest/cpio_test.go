package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

type cpioEntry struct {
	name       string
	mode       uint32
	rmaj, rmin uint32
	data       string
}

// readCPIO parses a newc archive the way the kernel does, checking the
// 4-byte padding after headers, names and data.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("header at %d is not 4-byte aligned", off)
		}
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		e := cpioEntry{mode: field(1), rmaj: field(9), rmin: field(10)}
		size, nameSize := int(field(6)), int(field(11))
		name := b[off+110 : off+110+nameSize]
		if name[nameSize-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", off)
		}
		e.name = string(name[:nameSize-1])
		dataOff := (off + 110 + nameSize + 3) &^ 3
		e.data = string(b[dataOff : dataOff+size])
		off = (dataOff + size + 3) &^ 3
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	host := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(host, []byte("ELF!x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.charDev("/dev/console", 0o600, 5, 1)
	w.file("/init", 0o755, []byte("#!/bin/sh\n"))
	w.fileFrom("/usr/local/bin/tool", 0o755, host)
	w.file("/vmtest/key", 0o600, []byte{0, 1, 2})
	w.file("/empty", 0o644, nil)
	w.symlink("/bin/sh", "busybox")
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	want := map[string]cpioEntry{
		"dev":                {mode: modeDir | 0o755},
		"dev/console":        {mode: modeChar | 0o600, rmaj: 5, rmin: 1},
		"init":               {mode: modeFile | 0o755, data: "#!/bin/sh\n"},
		"usr":                {mode: modeDir | 0o755},
		"usr/local":          {mode: modeDir | 0o755},
		"usr/local/bin":      {mode: modeDir | 0o755},
		"usr/local/bin/tool": {mode: modeFile | 0o755, data: "ELF!x"},
		"vmtest":             {mode: modeDir | 0o755},
		"vmtest/key":         {mode: modeFile | 0o600, data: "\x00\x01\x02"},
		"empty":              {mode: modeFile | 0o644},
		"bin":                {mode: modeDir | 0o755},
		"bin/sh":             {mode: modeLink | 0o777, data: "busybox"},
	}
	seen := map[string]bool{}
	for _, e := range got {
		w, ok := want[e.name]
		if !ok {
			t.Errorf("unexpected entry %q", e.name)
			continue
		}
		if seen[e.name] {
			t.Errorf("entry %q twice", e.name)
		}
		seen[e.name] = true
		if e.mode != w.mode || e.rmaj != w.rmaj || e.rmin != w.rmin || e.data != w.data {
			t.Errorf("%s: got mode %o rdev %d:%d data %q, want mode %o rdev %d:%d data %q",
				e.name, e.mode, e.rmaj, e.rmin, e.data, w.mode, w.rmaj, w.rmin, w.data)
		}
		// Parents come before children, as the kernel needs.
		if dir := filepath.Dir(e.name); dir != "." && !seen[dir] {
			t.Errorf("%s comes before its directory %s", e.name, dir)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d entries, want %d", len(seen), len(want))
	}

	// GNU cpio, where installed, must read the archive too.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -it: %v", err)
		}
		names := strings.Fields(string(out))
		sort.Strings(names)
		var wantNames []string
		for n := range want {
			wantNames = append(wantNames, n)
		}
		sort.Strings(wantNames)
		if fmt.Sprint(names) != fmt.Sprint(wantNames) {
			t.Errorf("cpio lists %v, want %v", names, wantNames)
		}
	}
}

func TestCPIOWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.fileFrom("/x", 0o755, filepath.Join(t.TempDir(), "missing"))
	if err := w.close(); err == nil {
		t.Error("missing host file not reported")
	}
	w = newCPIOWriter(&buf)
	w.fileFrom("/x", 0o755, t.TempDir())
	if err := w.close(); err == nil {
		t.Error("directory accepted as a file")
	}
}
