package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestRead(t *testing.T) {
	good, _ := rec("a").MarshalJSON()
	g := string(good)
	tests := []struct {
		name     string
		in       string
		records  int
		damaged  []int // line numbers
		tornTail bool
	}{
		{name: "empty", in: ""},
		{name: "clean", in: g + "\n" + g + "\n", records: 2},
		{name: "torn tail", in: g + "\n" + g[:20], records: 1, damaged: []int{2}, tornTail: true},
		{name: "whole record without its newline is still torn", in: g + "\n" + g, records: 1, damaged: []int{2}, tornTail: true},
		{name: "torn line mid-file", in: g + "\n" + g[:30] + "\n" + g + "\n", records: 2, damaged: []int{2}},
		{name: "empty line", in: g + "\n\n" + g + "\n", records: 2, damaged: []int{2}},
		{name: "not JSON", in: "garbage\n" + g + "\n", records: 1, damaged: []int{1}},
		{name: "JSON, not a record", in: `{"volume":"x"}` + "\n" + `[1,2]` + "\n", damaged: []int{1, 2}},
		{name: "bad time", in: strings.Replace(g, "Z\"", "\"", 1) + "\n", damaged: []int{1}},
		{name: "trailing garbage", in: g + "xx\n", damaged: []int{1}},
		{name: "overlong line", in: `{"op":"` + strings.Repeat("a", maxLine) + "\"}\n" + g + "\n", records: 1, damaged: []int{1}},
		{name: "unknown field from a newer writer", in: strings.Replace(g, `"volume"`, `"new":1,"volume"`, 1) + "\n", records: 1},
		{name: "NUL bytes", in: "\x00\x00\x00\n" + g + "\n", records: 1, damaged: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Read(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var lines []int
			for _, d := range res.Damaged {
				lines = append(lines, d.Line)
				if len(d.Text) > 80 || d.Reason == "" {
					t.Errorf("damage report %v", d)
				}
			}
			if len(res.Records) != tt.records || !equalInts(lines, tt.damaged) || res.TornTail != tt.tornTail {
				t.Fatalf("records %d, damaged %v, torn %v; want %d, %v, %v", len(res.Records), res.Damaged, res.TornTail, tt.records, tt.damaged, tt.tornTail)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	if _, err := Read(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

func TestUnitFromCgroup(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0::/system.slice/systemd-cryptsetup@data.service\n", "systemd-cryptsetup@data.service"},
		{"0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"},
		{"0::/system.slice/kmsagent.service/worker\n", "kmsagent.service"},
		{"12:cpu:/foo\n1:name=systemd:/system.slice/cron.service\n", "cron.service"},
		{"0::/\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := unitFromCgroup(tt.in); got != tt.want {
			t.Errorf("unitFromCgroup(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzRead: Read never fails on bytes from memory, accounts for every
// line, and what it returns as a record writes back as a record.
func FuzzRead(f *testing.F) {
	good, _ := rec("a").MarshalJSON()
	f.Add(append(good, '\n'))
	f.Add(append(append(good, '\n'), good[:17]...))
	f.Add([]byte("\n\n{}\n[]\nnull\n"))
	f.Add([]byte(`{"time":"2026-12-01T10:00:00Z","op":"unwrap","result":"ok","uid":"x"}` + "\n"))
	f.Add([]byte(`{"time":"2026-12-01T10:00:00Z","op":"\u0000","result":"ok","volume":"\ud800"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Read(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Count(data, []byte{'\n'})
		if len(data) > 0 && data[len(data)-1] != '\n' {
			lines++
			if !res.TornTail {
				t.Fatal("no torn tail reported")
			}
		}
		if len(res.Records)+len(res.Damaged) != lines {
			t.Fatalf("%d records + %d damaged for %d lines", len(res.Records), len(res.Damaged), lines)
		}
		for _, r := range res.Records {
			b, err := r.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Read(bytes.NewReader(append(b, '\n')))
			if err != nil || len(back.Records) != 1 {
				t.Fatalf("%s does not read back: %v %v", b, err, back.Damaged)
			}
		}
	})
}

// BenchmarkWrite measures a record written and fdatasync'ed, on the file
// system of the test's temporary directory.
func BenchmarkWrite(b *testing.B) {
	l, err := Open(filepath.Join(logDir(b), "audit.log"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := rec("data")
	r.Time = time.Now()
	line, _ := r.MarshalJSON()
	b.SetBytes(int64(len(line) + 1))
	for b.Loop() {
		if err := l.Write(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLookupCaller(t *testing.T) {
	c := LookupCaller(1000, os.Getpid())
	if c.UID != 1000 || c.PID != os.Getpid() || c.Comm != "audit.test" {
		t.Fatalf("LookupCaller of this process: %+v", c)
	}
	if c := LookupCaller(0, 0); c != (Caller{}) {
		t.Fatalf("no pid: %+v", c)
	}
}
