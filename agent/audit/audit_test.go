package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
)

func TestErrorKind(t *testing.T) {
	kmsErr := func(kind error, cause error) error {
		return fmt.Errorf("unlock data: %w", &kmsclient.Error{Provider: "aws", Op: "decrypt", Kind: kind, Err: cause})
	}
	tests := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{kmsErr(kmsclient.ErrKeyNotFound, nil), "key_not_found"},
		{kmsErr(kmsclient.ErrKeyDisabled, nil), "key_disabled"},
		{kmsErr(kmsclient.ErrKeyPendingDeletion, nil), "key_pending_deletion"},
		{kmsErr(kmsclient.ErrAccessDenied, nil), "access_denied"},
		{kmsErr(kmsclient.ErrThrottled, nil), "kms_throttled"},
		// The KMS kind wins over the context error that caused it.
		{kmsErr(kmsclient.ErrUnavailable, context.DeadlineExceeded), "kms_unavailable"},
		{kmsErr(kmsclient.ErrInvalidCiphertext, nil), "invalid_ciphertext"},
		{kmsErr(kmsclient.ErrInvalidRequest, nil), "invalid_request"},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{errors.New("keyslot 0: bad digest"), "error"},
	}
	for _, tt := range tests {
		if got := ErrorKind(tt.err); got != tt.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestWithError(t *testing.T) {
	long := strings.Repeat("é", maxMessage) // 2 bytes each: the cut lands inside one
	tests := []struct {
		err        error
		result     string
		message    string
		maxLen     int
		validUTF8  bool
		noNewlines bool
	}{
		{err: nil, result: "ok", message: ""},
		{err: errors.New("first\nsecond"), result: "error", message: "first"},
		{err: errors.New(long), result: "error", maxLen: maxMessage + 3},
		{err: errors.New("bad \xff byte"), result: "error", message: "bad \uFFFD byte"},
	}
	for _, tt := range tests {
		r := rec("v").WithError(tt.err)
		if r.Result != tt.result {
			t.Errorf("%v: result %q, want %q", tt.err, r.Result, tt.result)
		}
		if tt.maxLen == 0 && r.Error != tt.message {
			t.Errorf("%v: message %q, want %q", tt.err, r.Error, tt.message)
		}
		if tt.maxLen > 0 && (len(r.Error) > tt.maxLen || !strings.HasSuffix(r.Error, "...")) {
			t.Errorf("long message kept %d bytes", len(r.Error))
		}
		if !utf8Valid(r.Error) {
			t.Errorf("%v: message not valid UTF-8: %q", tt.err, r.Error)
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }

// TestRecordHasNoRoomForKeys: every field of Record, recursively, is a
// string, an integer or a time. A []byte, *secret.Key, error or
// interface field would be a place key material could end up in.
func TestRecordHasNoRoomForKeys(t *testing.T) {
	timeType := reflect.TypeFor[time.Time]()
	var check func(path string, typ reflect.Type)
	check = func(path string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			switch {
			case f.Type == timeType:
			case f.Type.Kind() == reflect.Struct:
				check(path+"."+f.Name, f.Type)
			case f.Type.Kind() == reflect.String, f.Type.Kind() == reflect.Int:
			default:
				t.Errorf("%s.%s is a %s: only strings, ints and times belong in an audit record", path, f.Name, f.Type)
			}
		}
	}
	check("Record", reflect.TypeFor[Record]())
}

func TestWriteRead(t *testing.T) {
	dir := logDir(t)
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	when := time.Date(2026, 12, 1, 10, 0, 0, 5000, time.FixedZone("CET", 3600))
	r := rec("data")
	r.Time = when
	r.Unit = "systemd-cryptsetup@data.service"
	r = r.WithError(&kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrKeyDisabled})
	if err := l.Write(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	second := rec("second")
	second.Time = time.Time{} // Write fills it in
	before := time.Now()
	if err := l.Write(context.Background(), second); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(b), "\n", 2)[0]
	want := `{"time":"2026-12-01T09:00:00.000005000Z","uid":0,"pid":4242,"comm":"kmsagent","unit":"systemd-cryptsetup@data.service","volume":"data","kind":"luks","cmk":"0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f","provider":"local","op":"unwrap","result":"key_disabled","error":"local kms decrypt: key disabled; enable the key"}`
	if first != want {
		t.Errorf("line\n%s\nwant\n%s", first, want)
	}
	stamp := regexp.MustCompile(`^\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"`)
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !stamp.MatchString(line) {
			t.Errorf("time stamp not RFC 3339 UTC with ns: %s", line)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %#o, want 0600", fi.Mode().Perm())
	}

	res, err := ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Damaged) != 0 || res.TornTail {
		t.Fatalf("damage in a clean log: %v", res.Damaged)
	}
	if len(res.Records) != 2 || !res.Records[0].Time.Equal(when) || res.Records[0].Unit != r.Unit || res.Records[0].Result != "key_disabled" || res.Records[1].Volume != "second" || res.Records[1].Time.Before(before) || res.Records[1].Time.Location() != time.UTC {
		t.Fatalf("read back %+v", res.Records)
	}
}

// TestOpenRefuses: root must not append where another user can redirect
// the appends.
func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the log path
		want  error
		say   string
	}{
		{name: "symlinked log", want: nil, say: "symbolic link", setup: func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "victim"), nil, 0o600)
			os.Symlink(filepath.Join(dir, "victim"), filepath.Join(dir, "audit.log"))
			return filepath.Join(dir, "audit.log")
		}},
		{name: "symlinked directory", want: safepath.ErrSymlink, setup: func(t *testing.T, dir string) string {
			os.Symlink(dir, dir+".link")
			return filepath.Join(dir+".link", "audit.log")
		}},
		{name: "group-writable directory", want: safepath.ErrUntrustedDir, say: "chmod 0755", setup: func(t *testing.T, dir string) string {
			os.Chmod(dir, 0o775)
			return filepath.Join(dir, "audit.log")
		}},
		{name: "world-writable sticky directory", want: safepath.ErrUntrustedDir, setup: func(t *testing.T, dir string) string {
			os.Chmod(dir, 0o1777)
			return filepath.Join(dir, "audit.log")
		}},
		{name: "directory owned by another user", want: safepath.ErrUntrustedDir, say: "uid 65534", setup: func(t *testing.T, dir string) string {
			tstest.NeedRoot(t, "to chown")
			os.Chown(dir, 65534, 65534)
			return filepath.Join(dir, "audit.log")
		}},
		{name: "log is a fifo", say: "not a regular file", setup: func(t *testing.T, dir string) string {
			unix.Mkfifo(filepath.Join(dir, "audit.log"), 0o600)
			return filepath.Join(dir, "audit.log")
		}},
		{name: "missing directory", want: os.ErrNotExist, setup: func(t *testing.T, dir string) string {
			return filepath.Join(dir, "nope", "audit.log")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := logDir(t)
			path := tt.setup(t, dir)
			l, err := Open(path, Options{})
			if err == nil {
				l.Close()
				t.Fatal("opened")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.say) {
				t.Errorf("%q does not say %q", err, tt.say)
			}
			if !strings.Contains(err.Error(), filepath.Dir(filepath.Dir(path))) {
				t.Errorf("%q does not name the path", err)
			}
		})
	}
}

func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(logDir(t), "audit.log")
	l, err := Open(path, Options{MaxSize: 8 << 10, Keep: 100})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				mustWrite(t, l, fmt.Sprintf("w%d-%d", w, i))
			}
		})
	}
	wg.Wait()
	l.Close()
	res, err := ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Damaged) > 0 {
		t.Fatalf("damaged lines: %v", res.Damaged)
	}
	got := volumes(res.Records)
	if len(got) != writers*each {
		t.Fatalf("%d records, want %d", len(got), writers*each)
	}
	// Each writer's records are there once, in its order.
	for w := range writers {
		var mine []string
		for _, v := range got {
			if strings.HasPrefix(v, fmt.Sprintf("w%d-", w)) {
				mine = append(mine, v)
			}
		}
		if !slices.Equal(mine, seq(fmt.Sprintf("w%d-", w), each)) {
			t.Fatalf("writer %d: %v", w, mine)
		}
	}
	if _, err := os.Stat(path + ".2"); err != nil {
		t.Fatalf("no rotation happened: %v", err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	l, err := Open(filepath.Join(logDir(t), "audit.log"), Options{FailOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Write(context.Background(), rec("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestWriteWaitHonoursContext: a writer stuck behind another gives up
// when its context ends.
func TestWriteWaitHonoursContext(t *testing.T) {
	l, err := Open(filepath.Join(logDir(t), "audit.log"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.sem <- struct{}{} // another write in progress
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Write(ctx, rec("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	<-l.sem
}

// TestTornTailIsolated: after a crash mid-write the file ends inside a
// line; the next record starts on a line of its own and only the torn
// one is lost.
func TestTornTailIsolated(t *testing.T) {
	path := filepath.Join(logDir(t), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, "before")
	l.Close()
	line, _ := rec("in-flight").MarshalJSON()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(line[:len(line)/2])
	f.Close()

	res, _ := ReadFiles(path)
	if !res.TornTail || len(res.Damaged) != 1 || !slices.Equal(volumes(res.Records), []string{"before"}) {
		t.Fatalf("before reopening: torn %v, damaged %v, records %v", res.TornTail, res.Damaged, volumes(res.Records))
	}

	l, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, "after")
	l.Close()
	res, _ = ReadFiles(path)
	if res.TornTail || len(res.Damaged) != 1 || res.Damaged[0].Line != 2 {
		t.Fatalf("torn %v, damaged %v", res.TornTail, res.Damaged)
	}
	if !slices.Equal(volumes(res.Records), []string{"before", "after"}) {
		t.Fatalf("records %v", volumes(res.Records))
	}
}

// TestRotation: files are shifted in order, the oldest dropped beyond
// Keep, and every kept record is in exactly one file.
func TestRotation(t *testing.T) {
	line, _ := rec("v00").MarshalJSON()
	size := int64(len(line) + 1)
	tests := []struct {
		name     string
		perFile  int64
		keep     int
		records  int
		wantKept int
	}{
		{name: "no rotation", perFile: 10, keep: 3, records: 10, wantKept: 10},
		{name: "rotations within keep", perFile: 4, keep: 5, records: 10, wantKept: 10},
		{name: "oldest dropped", perFile: 3, keep: 2, records: 20, wantKept: 3*2 + 2},
		{name: "one record per file", perFile: 1, keep: 3, records: 10, wantKept: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(logDir(t), "audit.log")
			l, err := Open(path, Options{MaxSize: tt.perFile * size, Keep: tt.keep})
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.records {
				mustWrite(t, l, fmt.Sprintf("v%02d", i))
			}
			l.Close()
			res, err := ReadFiles(path)
			if err != nil {
				t.Fatal(err)
			}
			all := seq("v", tt.records)
			for i := range all {
				all[i] = fmt.Sprintf("v%02d", i)
			}
			if got, want := volumes(res.Records), all[tt.records-tt.wantKept:]; !slices.Equal(got, want) {
				t.Fatalf("kept %v, want %v", got, want)
			}
			if _, err := os.Stat(fmt.Sprintf("%s.%d", path, tt.keep+1)); err == nil {
				t.Fatalf("more than %d rotated files", tt.keep)
			}
			for g := 1; g <= tt.keep; g++ {
				if fi, err := os.Stat(fmt.Sprintf("%s.%d", path, g)); err == nil && fi.Size() > tt.perFile*size {
					t.Fatalf("%s.%d has %d bytes, more than %d", path, g, fi.Size(), tt.perFile*size)
				}
			}
		})
	}
}

// errCrash stands for the process dying at a rotation step.
type errCrash struct{ step string }

// TestRotationCrashAtEachStep stops a rotation at each of its steps as
// a kill would (nothing after that point runs: the panic unwinds through
// no clean-up but the release of the directory flock, which a dying
// process releases as well), reopens the log as the restarted daemon
// would, and checks that every record written is in exactly one file, in
// order.
func TestRotationCrashAtEachStep(t *testing.T) {
	line, _ := rec("v00").MarshalJSON()
	size := int64(len(line) + 1)
	opts := Options{MaxSize: 3 * size, Keep: 50}

	// Learn the steps of a rotation with three generations on disk.
	var steps []string
	{
		path := filepath.Join(logDir(t), "audit.log")
		l, _ := Open(path, opts)
		for i := range 10 {
			mustWrite(t, l, fmt.Sprintf("v%02d", i))
		}
		l.step = func(s string) error { steps = append(steps, s); return nil }
		for i := 10; i < 16; i++ {
			mustWrite(t, l, fmt.Sprintf("v%02d", i))
		}
		l.Close()
	}
	if len(steps) < 3 {
		t.Fatalf("steps %v", steps)
	}

	for _, stop := range steps {
		t.Run(stop, func(t *testing.T) {
			path := filepath.Join(logDir(t), "audit.log")
			l, err := Open(path, opts)
			if err != nil {
				t.Fatal(err)
			}
			var written []string
			for i := range 10 {
				mustWrite(t, l, fmt.Sprintf("v%02d", i))
				written = append(written, fmt.Sprintf("v%02d", i))
			}
			l.step = func(s string) error {
				if s == stop {
					panic(errCrash{s})
				}
				return nil
			}
			func() {
				defer func() {
					if _, ok := recover().(errCrash); !ok {
						t.Fatal("the rotation did not reach the step")
					}
				}()
				for i := 10; i < 20; i++ {
					mustWrite(t, l, fmt.Sprintf("v%02d", i))
					written = append(written, fmt.Sprintf("v%02d", i))
				}
			}()
			// The dead process's descriptors go away with it.
			l.f.Close()
			l.dir.Close()

			l, err = Open(path, opts)
			if err != nil {
				t.Fatalf("reopen after a crash at %q: %v", stop, err)
			}
			for i := 20; i < 30; i++ {
				mustWrite(t, l, fmt.Sprintf("v%02d", i))
				written = append(written, fmt.Sprintf("v%02d", i))
			}
			l.Close()
			res, err := ReadFiles(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Damaged) > 0 {
				t.Fatalf("damaged: %v", res.Damaged)
			}
			if got := volumes(res.Records); !slices.Equal(got, written) {
				t.Fatalf("after a crash at %q:\n got %v\nwant %v", stop, got, written)
			}
		})
	}
}

// TestDiskFull: on a full file system Write fails with ENOSPC, or under
// FailOpen counts and reports the drop; once space is back the log goes
// on with no damage.
func TestDiskFull(t *testing.T) {
	tstest.NeedRoot(t, "to mount a tmpfs")
	for _, failOpen := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailOpen=%v", failOpen), func(t *testing.T) {
			dir := logDir(t)
			if err := unix.Mount("kmsagent-test", dir, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
				t.Fatal(err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			path := filepath.Join(dir, "audit.log")
			var reported []error
			l, err := Open(path, Options{FailOpen: failOpen, Report: func(err error) { reported = append(reported, err) }})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			mustWrite(t, l, "before")

			filler, _ := os.Create(filepath.Join(dir, "filler"))
			for {
				if _, err := filler.Write(make([]byte, 4096)); err != nil {
					break
				}
			}
			// The log's own page may still have room: fill it as well.
			for i := 0; ; i++ {
				err = l.Write(context.Background(), rec(fmt.Sprintf("fill%d", i)))
				if err != nil || l.Dropped() > 0 || i > 1000 {
					break
				}
			}
			if failOpen {
				if err != nil || l.Dropped() != 1 || len(reported) != 1 || !errors.Is(reported[0], unix.ENOSPC) {
					t.Fatalf("fail open: err %v, dropped %d, reported %v", err, l.Dropped(), reported)
				}
			} else if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), path) {
				t.Fatalf("fail closed: %v", err)
			}

			filler.Close()
			os.Remove(filepath.Join(dir, "filler"))
			mustWrite(t, l, "after")
			res, err := ReadFiles(path)
			if err != nil {
				t.Fatal(err)
			}
			got := volumes(res.Records)
			if got[0] != "before" || got[len(got)-1] != "after" {
				t.Fatalf("records %v", got)
			}
			// A short write leaves one damaged line at most.
			if len(res.Damaged) > 1 || res.TornTail {
				t.Fatalf("damaged %v torn %v", res.Damaged, res.TornTail)
			}
		})
	}
}

// TestTwoWriters: two Logs on one path, as two processes would have
// them, take turns under the directory lock and follow each other's
// rotations: every record lands once, in a kept file, and no file grows
// past MaxSize.
func TestTwoWriters(t *testing.T) {
	path := filepath.Join(logDir(t), "audit.log")
	line, _ := rec("a-00").MarshalJSON()
	opts := Options{MaxSize: 5 * int64(len(line)+1), Keep: 1000}
	var logs [2]*Log
	for i := range logs {
		l, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		logs[i] = l
	}
	const each = 60
	var wg sync.WaitGroup
	for i, l := range logs {
		wg.Go(func() {
			for n := range each {
				mustWrite(t, l, fmt.Sprintf("%c-%02d", 'a'+i, n))
			}
		})
	}
	wg.Wait()
	res, err := ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Damaged) > 0 {
		t.Fatalf("damaged: %v", res.Damaged)
	}
	for i := range logs {
		var mine []string
		for _, v := range volumes(res.Records) {
			if v[0] == byte('a'+i) {
				mine = append(mine, v)
			}
		}
		want := make([]string, each)
		for n := range want {
			want[n] = fmt.Sprintf("%c-%02d", 'a'+i, n)
		}
		if !slices.Equal(mine, want) {
			t.Fatalf("writer %d: %v", i, mine)
		}
	}
	gens, _ := generations(path)
	for _, g := range gens {
		name := path
		if g > 0 {
			name = fmt.Sprintf("%s.%d", path, g)
		}
		if fi, err := os.Stat(name); err != nil || fi.Size() > opts.MaxSize {
			t.Fatalf("%s: %v, size %d > %d", name, err, fi.Size(), opts.MaxSize)
		}
	}
	if len(gens) < 2*each/5 {
		t.Fatalf("%d files for %d records of 5 per file", len(gens), 2*each)
	}
}
