package state

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
	"kmsagent/agent/tstest"
)

func TestSaveLoad(t *testing.T) {
	dir := stateDir(t)
	s := open(t, dir)
	if _, err := s.Load(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("first load: %v, want ErrNotExist", err)
	}
	for gen := 1; gen <= 3; gen++ {
		if err := s.Save(sample(gen)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, sample(gen)) {
			t.Fatalf("loaded %+v, want %+v", got, sample(gen))
		}
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v %v, want mode 0700", fi.Mode(), err)
	}
	fi, err = os.Stat(s.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v, want mode 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(s.Path())
	if !strings.HasPrefix(string(b), "{\n  \"version\": 2,\n  \"state\": {\n    \"generation\": 3,") {
		t.Fatalf("file:\n%s", b)
	}
	assertNoTemps(t, dir)
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	if n := temps(t, dir); n > 0 {
		t.Fatalf("%d temporary files left", n)
	}
}

func temps(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			n++
		}
	}
	return n
}

func TestOpenChecksDirectory(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the directory to open
		want  error                                 // nil: opens
		say   string
	}{
		{name: "missing: created 0700", setup: func(t *testing.T, dir string) string { return dir }},
		{name: "missing parents too", setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "a", "b") }},
		{name: "existing 0700", setup: func(t *testing.T, dir string) string {
			os.Mkdir(dir, 0o700)
			return dir
		}},
		{name: "group-readable", want: safepath.ErrUntrustedDir, say: "chmod 0700", setup: func(t *testing.T, dir string) string {
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, 0o750)
			return dir
		}},
		{name: "world-writable", want: safepath.ErrUntrustedDir, setup: func(t *testing.T, dir string) string {
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, 0o777)
			return dir
		}},
		{name: "symlink", want: safepath.ErrSymlink, say: "symbolic link", setup: func(t *testing.T, dir string) string {
			os.Mkdir(dir, 0o700)
			os.Symlink(dir, dir+".link")
			return dir + ".link"
		}},
		{name: "symlink to a missing directory", want: safepath.ErrSymlink, setup: func(t *testing.T, dir string) string {
			os.Symlink(dir, dir+".link")
			return dir + ".link"
		}},
		{name: "owned by another user", want: safepath.ErrUntrustedDir, say: "uid 65534", setup: func(t *testing.T, dir string) string {
			tstest.NeedRoot(t, "to chown")
			os.Mkdir(dir, 0o700)
			os.Chown(dir, 65534, 65534)
			return dir
		}},
		{name: "a file", want: unix.ENOTDIR, setup: func(t *testing.T, dir string) string {
			os.WriteFile(dir, nil, 0o600)
			return dir
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t, stateDir(t))
			s, err := Open(dir, opts())
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
					t.Fatalf("%v %v", fi.Mode(), err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.say) || !strings.Contains(err.Error(), filepath.Base(dir)) {
				t.Errorf("%q does not name the path or say %q", err, tt.say)
			}
		})
	}
	if _, err := Open(stateDir(t), Options[doc]{}); err == nil {
		t.Error("opened without a schema version")
	}
}

func TestLoadErrors(t *testing.T) {
	good := `{"version": 2, "state": {"generation": 7}}`
	tests := []struct {
		name    string
		content string // written as the state file
		setup   func(path string)
		want    error // nil: loads generation 7
	}{
		{name: "good", content: good},
		{name: "good, null state", content: `{"version": 2, "state": null}`, want: nil},
		{name: "empty", content: "", want: ErrCorrupt},
		{name: "truncated", content: good[:len(good)/2], want: ErrCorrupt},
		{name: "not JSON", content: "\x00\x00\x00\x00", want: ErrCorrupt},
		{name: "trailing data", content: good + "{}", want: ErrCorrupt},
		{name: "two documents", content: good + "\n" + good, want: ErrCorrupt},
		{name: "no version", content: `{"state": {"generation": 7}}`, want: ErrCorrupt},
		{name: "no state", content: `{"version": 2}`, want: ErrCorrupt},
		{name: "unknown field in the envelope", content: `{"version": 2, "state": {}, "x": 1}`, want: ErrCorrupt},
		{name: "unknown field in the state", content: `{"version": 2, "state": {"generation": 7, "x": 1}}`, want: ErrCorrupt},
		{name: "wrong type", content: `{"version": 2, "state": {"generation": "7"}}`, want: ErrCorrupt},
		{name: "future version", content: `{"version": 3, "state": {"generation": 7, "new": true}}`, want: ErrVersion},
		{name: "older version, no upgrade", content: `{"version": 1, "state": {}}`, want: ErrVersion},
		{name: "too large", content: `{"version": 2, "state": {"generation": 7}}` + strings.Repeat(" ", maxSize), want: ErrCorrupt},
		{name: "a directory", setup: func(path string) { os.Mkdir(path, 0o700) }, want: ErrCorrupt},
		{name: "a symlink", setup: func(path string) {
			os.WriteFile(path+".real", []byte(good), 0o600)
			os.Symlink(path+".real", path)
		}, want: ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, stateDir(t))
			if tt.setup != nil {
				tt.setup(s.Path())
			} else if err := os.WriteFile(s.Path(), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load()
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.Contains(tt.content, "7"); want && got.Generation != 7 {
					t.Fatalf("loaded %+v", got)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), s.Path()) {
				t.Errorf("%q does not name the file", err)
			}
			if tt.name == "future version" {
				var ve *VersionError
				if !errors.As(err, &ve) || ve.Version != 3 || ve.Want != 2 || !strings.Contains(err.Error(), "newer") {
					t.Errorf("future version: %v", err)
				}
			}
		})
	}
}

func TestUpgrade(t *testing.T) {
	dir := stateDir(t)
	o := opts()
	o.Upgrade = func(version int, raw json.RawMessage) (doc, error) {
		var old struct {
			Gen int `json:"gen"`
		}
		if err := json.Unmarshal(raw, &old); err != nil {
			return doc{}, err
		}
		return doc{Generation: old.Gen}, nil
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os.WriteFile(s.Path(), []byte(`{"version": 1, "state": {"gen": 5}}`), 0o600)
	if got, err := s.Load(); err != nil || got.Generation != 5 {
		t.Fatalf("upgrade: %+v %v", got, err)
	}
	os.WriteFile(s.Path(), []byte(`{"version": 1, "state": {"gen": "x"}}`), 0o600)
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "upgrade from version 1") {
		t.Fatalf("failed upgrade: %v", err)
	}
}

func TestLockInProcess(t *testing.T) {
	dir := stateDir(t)
	s := open(t, dir)
	_, err := Open(dir, opts())
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != os.Getpid() {
		t.Fatalf("second open: %v", err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("%q does not name the holder", err)
	}
	s.Close()
	s2, err := Open(dir, opts())
	if err != nil {
		t.Fatalf("after close: %v", err)
	}
	s2.Close()
}

// TestMain runs the child process of the tests that need another one
// when the environment asks for it, and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KMSAGENT_STATE_CHILD"); spec != "" {
		childMain(spec)
	}
	os.Exit(m.Run())
}

// childMain holds the lock until its stdin closes ("hold"), or saves
// until it is killed, printing each generation once Save has returned
// ("save").
func childMain(spec string) {
	mode, dir, _ := strings.Cut(spec, ",")
	s, err := Open(dir, opts())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	switch mode {
	case "hold":
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
	case "save":
		gen := 0
		if d, err := s.Load(); err == nil {
			gen = d.Generation
		}
		for {
			gen++
			if err := s.Save(sample(gen)); err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			fmt.Println(gen)
		}
	}
	os.Exit(0)
}

func child(t *testing.T, mode, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "KMSAGENT_STATE_CHILD="+mode+","+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if mode == "hold" {
		if _, err := cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

// TestLockOtherProcess: a second daemon is refused with the first one's
// pid, and the lock goes with the holder when it is killed.
func TestLockOtherProcess(t *testing.T) {
	dir := stateDir(t)
	cmd, out := child(t, "hold", dir)
	if !out.Scan() || out.Text() != "locked" {
		t.Fatalf("child: %q %v", out.Text(), out.Err())
	}
	_, err := Open(dir, opts())
	var le *LockedError
	if !errors.As(err, &le) || le.PID != cmd.Process.Pid {
		t.Fatalf("open while another process holds the lock: %v (child pid %d)", err, cmd.Process.Pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	s, err := Open(dir, opts())
	if err != nil {
		t.Fatalf("open after the holder was killed: %v", err)
	}
	s.Close()
}

// TestSaveFailsAtEachStep: an error at any step of Save leaves the old
// state (or, once renamed, the new one) and no temporary file.
func TestSaveFailsAtEachStep(t *testing.T) {
	tests := []struct {
		step string
		want int // generation Load sees afterwards
	}{
		{"create", 1},
		{"write", 1},
		{"sync", 1},
		{"rename", 1},
		{"sync directory", 2},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			dir := stateDir(t)
			s := open(t, dir)
			if err := s.Save(sample(1)); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("injected")
			reached := false
			s.step = func(step string) error {
				if step == tt.step {
					reached = true
					return boom
				}
				return nil
			}
			if err := s.Save(sample(2)); !errors.Is(err, boom) {
				t.Fatalf("save: %v", err)
			}
			if !reached {
				t.Fatal("step not reached")
			}
			got, err := s.Load()
			if err != nil || got.Generation != tt.want {
				t.Fatalf("after a failure at %q: %+v %v, want generation %d", tt.step, got, err, tt.want)
			}
			assertNoTemps(t, dir)
		})
	}
}

// TestSaveCrashAtEachStep stops Save at each step as a kill would
// (nothing after that point runs, no clean-up; the goroutine stays
// parked until the test binary exits), then opens the directory
// again as the restarted daemon would: it loads the old or the new
// state, whole, and finds no temporary file.
func TestSaveCrashAtEachStep(t *testing.T) {
	tests := []struct {
		step string
		want int
	}{
		{"create", 1},
		{"write", 1}, // half the new document is in the temporary file
		{"sync", 1},
		{"rename", 1},
		{"sync directory", 2},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			dir := stateDir(t)
			s, err := Open(dir, opts())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Save(sample(1)); err != nil {
				t.Fatal(err)
			}
			// The process "dies" at the step: Save stops there for good,
			// so none of its clean-up runs (a panic would run its
			// deferred calls).
			reached := make(chan struct{})
			s.step = func(step string) error {
				if step == tt.step {
					close(reached)
					select {} // never returns
				}
				return nil
			}
			go s.Save(sample(2))
			<-reached
			// Its descriptors, and so its lock, go away with it; its
			// temporary file does not.
			s.lock.Close()
			s.dir.Close()
			if tt.step != "create" && tt.step != "sync directory" {
				if temps(t, dir) != 1 {
					t.Fatal("no temporary file left behind by the crash")
				}
			}

			s2 := open(t, dir)
			got, err := s2.Load()
			if err != nil || got.Generation != tt.want {
				t.Fatalf("after a crash at %q: %+v %v, want generation %d", tt.step, got, err, tt.want)
			}
			assertNoTemps(t, dir)
		})
	}
}

// TestKillSaver kills a saving process with SIGKILL at random points,
// again and again; after each kill the next process must load a whole
// document holding the last acknowledged generation or the one in
// flight. SIGKILL leaves the page cache alone, so this checks crash
// atomicity, not durability across a power cut: the fsyncs are what
// cover that.
func TestKillSaver(t *testing.T) {
	const runs = 15
	dir := stateDir(t)
	acked := 0
	for run := range runs {
		cmd, out := child(t, "save", dir)
		killAfter := 1 + rand.IntN(20)
		saved := 0
		for out.Scan() {
			n, err := strconv.Atoi(out.Text())
			if err != nil {
				t.Fatalf("run %d: child: %s", run, out.Text())
			}
			acked = n
			if saved++; saved == killAfter {
				cmd.Process.Kill()
			}
		}
		cmd.Wait()

		s, err := Open(dir, opts())
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Load()
		s.Close()
		if err != nil {
			t.Fatalf("run %d: load after a kill: %v", run, err)
		}
		if got.Generation != acked && got.Generation != acked+1 {
			t.Fatalf("run %d: loaded generation %d, %d was acknowledged", run, got.Generation, acked)
		}
		if !reflect.DeepEqual(got, sample(got.Generation)) {
			t.Fatalf("run %d: loaded %+v", run, got)
		}
		acked = got.Generation
		assertNoTemps(t, dir)
	}
}

// FuzzDecode: the loader never panics, fails only with a typed error, and
// what it accepts saves and loads back unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version": 2, "state": {"generation": 7, "volumes": {"a": {"kind": "luks", "worker_pid": 3}}}}`))
	f.Add([]byte(`{"version": 3, "state": {}}`))
	f.Add([]byte(`{"version": 1, "state": {}}`))
	f.Add([]byte(`{"version": 2, "state": null}`))
	f.Add([]byte(`{"version": 2, "state": {"volumes": {"\ud800": {}}}}`))
	f.Add([]byte(`{"version": 2, "state": {}} x`))
	f.Add([]byte(`{"version": -1, "state": []}`))
	f.Add([]byte(`{"version": 2, "state": {"generation": 1e400}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decode("state.json", data, opts())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		state, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decode("state.json", []byte(fmt.Sprintf(`{"version": 2, "state": %s}`, state)), opts())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("%+v does not round-trip: %+v %v", got, again, err)
		}
	})
}

func TestClosed(t *testing.T) {
	s, err := Open(stateDir(t), opts())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Save(sample(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("save after close: %v", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("load after close: %v", err)
	}
}
