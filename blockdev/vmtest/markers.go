package vmtest

import (
	"strconv"
	"strings"
)

// Marker prefixes on the console.
const (
	resultPrefix = "VMTEST-RESULT"
	dataPrefix   = "VMTEST-DATA"
	exitPrefix   = "VMTEST-EXIT"
	bootPrefix   = "VMTEST-BOOT"
)

// Status values of result markers.
const (
	Pass = "PASS"
	Fail = "FAIL"
	Skip = "SKIP"
)

// Marker is one VMTEST-RESULT or VMTEST-DATA line.
type Marker struct {
	Kind   string // "RESULT" or "DATA"
	Name   string
	Status string // PASS, FAIL or SKIP for results; empty for data
	Detail string // the rest of the line: a result's detail, a datum's value
}

// parsed is what the console log says.
type parsed struct {
	markers  []Marker
	exitCode int // -1 when the script did not finish
	booted   bool
}

// parseConsole extracts the markers from a serial log. The log begins
// with firmware output and escape sequences and may have kernel messages
// in between, so a marker is recognised anywhere in a line and the line
// is cut there.
func parseConsole(log string) parsed {
	p := parsed{exitCode: -1}
	for _, line := range strings.Split(log, "\n") {
		line = strings.TrimRight(line, "\r")
		i := strings.Index(line, "VMTEST-")
		if i < 0 {
			continue
		}
		line = line[i:]
		kind, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch kind {
		case bootPrefix:
			p.booted = true
		case exitPrefix:
			if n, err := strconv.Atoi(rest); err == nil {
				p.exitCode = n
			}
		case resultPrefix:
			f := strings.SplitN(rest, " ", 3)
			if len(f) < 2 {
				continue
			}
			m := Marker{Kind: "RESULT", Name: f[0], Status: f[1]}
			if len(f) == 3 {
				m.Detail = f[2]
			}
			p.markers = append(p.markers, m)
		case dataPrefix:
			name, value, _ := strings.Cut(rest, " ")
			if name != "" {
				p.markers = append(p.markers, Marker{Kind: "DATA", Name: name, Detail: value})
			}
		}
	}
	return p
}

// oneLine makes s safe to put in a marker line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
