package vmtest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseConsole(t *testing.T) {
	log := "\x1b[2J\x1bcSeaBIOS (version 1.16)\r\n" +
		"VMTEST-BOOT kernel=6.1.0-56-cloud-amd64\r\n" +
		"=== RUN   TestX\r\n" +
		"VMTEST-RESULT TestX PASS\r\n" +
		"[    1.234567] device-mapper: ioctl: 4.47.0-ioctl VMTEST-RESULT glued FAIL after a kernel line\r\n" +
		"VMTEST-DATA table 0 8192 crypt aes-xts-plain64 :64:logon:kmsagent:test 0 254:0 0\r\n" +
		"VMTEST-RESULT TestY SKIP\r\n" +
		"VMTEST-RESULT incomplete\r\n" +
		"VMTEST-EXIT 0\r\n" +
		"[    2.0] reboot: Power down\r\n"
	p := parseConsole(log)
	if !p.booted || p.exitCode != 0 {
		t.Fatalf("booted %v exit %d", p.booted, p.exitCode)
	}
	want := []Marker{
		{Kind: "RESULT", Name: "TestX", Status: Pass},
		{Kind: "RESULT", Name: "glued", Status: Fail, Detail: "after a kernel line"},
		{Kind: "DATA", Name: "table", Detail: "0 8192 crypt aes-xts-plain64 :64:logon:kmsagent:test 0 254:0 0"},
		{Kind: "RESULT", Name: "TestY", Status: Skip},
	}
	if !reflect.DeepEqual(p.markers, want) {
		t.Fatalf("markers\n got %+v\nwant %+v", p.markers, want)
	}
}

func TestParseConsoleUnfinished(t *testing.T) {
	tests := []struct {
		name   string
		log    string
		booted bool
	}{
		{"empty", "", false},
		{"firmware only", "SeaBIOS\r\n", false},
		{"no exit", "VMTEST-BOOT kernel=x\nVMTEST-RESULT a PASS\n", true},
		{"bad exit", "VMTEST-BOOT kernel=x\nVMTEST-EXIT x\n", true},
	}
	for _, tt := range tests {
		p := parseConsole(tt.log)
		if p.booted != tt.booted || p.exitCode != -1 {
			t.Errorf("%s: booted %v exit %d", tt.name, p.booted, p.exitCode)
		}
	}
}

func TestResultAccessors(t *testing.T) {
	r := &Result{Markers: []Marker{
		{Kind: "RESULT", Name: "a", Status: Fail},
		{Kind: "RESULT", Name: "a", Status: Pass},
		{Kind: "DATA", Name: "v", Detail: "1"},
		{Kind: "DATA", Name: "v", Detail: "2"},
	}}
	if r.Status("a") != Pass || r.Status("b") != "" {
		t.Errorf("Status: a=%q b=%q", r.Status("a"), r.Status("b"))
	}
	if v, ok := r.Data("v"); !ok || v != "2" {
		t.Errorf("Data(v) = %q, %v", v, ok)
	}
	if _, ok := r.Data("w"); ok {
		t.Error("Data(w) found")
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\nb\r\nc"); got != "a b  c" || strings.ContainsAny(got, "\r\n") {
		t.Errorf("oneLine = %q", got)
	}
}

func TestRequireSuccess(t *testing.T) {
	tests := []struct {
		name  string
		r     Result
		names []string
		ok    bool
	}{
		{"all pass", Result{Markers: []Marker{{Kind: "RESULT", Name: "a", Status: Pass}}}, []string{"a"}, true},
		{"exit status", Result{ExitCode: 1, Markers: []Marker{{Kind: "RESULT", Name: "a", Status: Pass}}}, []string{"a"}, false},
		{"a failure", Result{Markers: []Marker{{Kind: "RESULT", Name: "b", Status: Fail}}}, nil, false},
		{"missing", Result{}, []string{"a"}, false},
		{"skipped", Result{Markers: []Marker{{Kind: "RESULT", Name: "a", Status: Skip}}}, []string{"a"}, false},
	}
	for _, tt := range tests {
		ft := &fakeTB{TB: t}
		func() {
			defer func() { recover() }()
			tt.r.RequireSuccess(ft, tt.names...)
		}()
		if ft.failed == tt.ok {
			t.Errorf("%s: failed=%v, want ok=%v", tt.name, ft.failed, tt.ok)
		}
	}
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Logf(string, ...any)   {}
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true; panic("fatal") }
