package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// maxLine bounds a line Read accepts as a record; longer lines are
// reported as damaged without being held in memory whole.
const maxLine = 64 << 10

// Damage is a line of a log that is not a record.
type Damage struct {
	File   string // as given to ReadFiles; empty for Read
	Line   int    // 1-based
	Reason string
	Text   string // the start of the line, for a person to look at
}

func (d Damage) String() string {
	loc := "line " + strconv.Itoa(d.Line)
	if d.File != "" {
		loc = d.File + ":" + strconv.Itoa(d.Line)
	}
	return fmt.Sprintf("%s: %s: %q", loc, d.Reason, d.Text)
}

// Result is what Read found.
type Result struct {
	Records []Record
	// Damaged lists the lines that are not records, the torn tail
	// included.
	Damaged []Damage
	// TornTail is set when the last line has no newline: a write cut
	// short by a crash or a full disk, the record in flight. It is in
	// Damaged, not in Records, even when it happens to parse.
	TornTail bool
}

// Read parses an audit log, tolerating damage: lines that are not whole
// records are reported in the Result, not returned as an error. The
// error is for failures to read r.
func Read(r io.Reader) (*Result, error) {
	res := &Result{}
	err := read(r, "", res)
	return res, err
}

// ReadFiles reads the log at path and its rotated files, oldest first
// (path.N ... path.1, path), into one Result. Missing generations are
// skipped; TornTail refers to the current file.
func ReadFiles(path string) (*Result, error) {
	gens, err := generations(path)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, g := range gens {
		name := path
		if g > 0 {
			name = path + "." + strconv.Itoa(g)
		}
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		res.TornTail = false
		err = read(f, name, res)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// generations lists the rotated generations of path, highest first, then
// 0 for path itself.
func generations(path string) ([]int, error) {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	return append(rotated(names, filepath.Base(path)), 0), nil
}

// rotated picks the generation numbers of base (base.1, base.2, ...) out
// of names, highest first.
func rotated(names []string, base string) []int {
	var gens []int
	for _, name := range names {
		suffix, ok := strings.CutPrefix(name, base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suffix); err == nil && n > 0 && strconv.Itoa(n) == suffix {
			gens = append(gens, n)
		}
	}
	slices.Sort(gens)
	slices.Reverse(gens)
	return gens
}

func read(r io.Reader, file string, res *Result) error {
	br := bufio.NewReaderSize(r, 4096)
	for line := 1; ; line++ {
		text, complete, tooLong, err := readLine(br)
		if err != nil {
			return err
		}
		if !complete && len(text) == 0 {
			return nil // end of input
		}
		damage := func(reason string) {
			shown := text
			if len(shown) > 80 {
				shown = shown[:80]
			}
			res.Damaged = append(res.Damaged, Damage{File: file, Line: line, Reason: reason, Text: string(shown)})
		}
		switch {
		case !complete:
			res.TornTail = true
			damage("torn last line (no newline): a write cut short")
			return nil
		case tooLong:
			damage(fmt.Sprintf("line longer than %d bytes", maxLine))
			continue
		}
		rec, err := parseRecord(text)
		if err != nil {
			damage(err.Error())
			continue
		}
		res.Records = append(res.Records, rec)
	}
}

// readLine returns the next line without its newline, and whether it
// ended with one. Of a line longer than maxLine only the start is kept.
func readLine(br *bufio.Reader) (text []byte, complete, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if len(text)+len(chunk) <= maxLine+1 {
			text = append(text, chunk...)
		} else {
			tooLong = true
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(text, []byte{'\n'}), true, tooLong, nil
		case err == io.EOF:
			return text, false, tooLong, nil
		case err != bufio.ErrBufferFull:
			return nil, false, false, err
		}
	}
}

// parseRecord accepts one JSON object that has at least a time, an
// operation and a result: what Write always writes. Unknown fields are
// allowed, so that older tools read newer logs.
func parseRecord(b []byte) (Record, error) {
	var rec Record
	if len(bytes.TrimSpace(b)) == 0 {
		return rec, errors.New("empty line")
	}
	if b[0] != '{' {
		return rec, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("not a record: %v", err)
	}
	if rec.Time.IsZero() || rec.Op == "" || rec.Result == "" {
		return Record{}, errors.New("not a record: time, op or result missing")
	}
	return rec, nil
}
