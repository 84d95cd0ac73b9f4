package daemon

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"kmsagent/agent/state"
	"kmsagent/agent/tstest"
)

func openStateFile(t *testing.T, dir string) *StateFile {
	t.Helper()
	f, err := OpenStateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestStateRestart: a restarted daemon adopts what the kernel still has
// mounted and restores from the state file what the kernel cannot tell:
// since when, the CMK, the retries, and the last error of a volume that
// failed; a volume the file has mounted that the kernel no longer
// reports is failed (gone) rather than shown unmounted.
func TestStateRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		sf := openStateFile(t, dir)
		svc := newFake()
		svc.results["a"] = []error{errThrottled}
		svc.results["m"] = []error{errDisabled}
		d := New(cfgWith(vol("a", true), vol("b", false), vol("m", false)), Options{Service: svc, State: sf, Backoff: fixedBackoff})
		stop := started(t, d)
		time.Sleep(time.Minute) // a's retry
		synctest.Wait()
		if _, err := d.Mount(t.Context(), "b", "uid=0"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Mount(t.Context(), "m", "uid=0"); !errors.Is(err, errDisabled.Kind) {
			t.Fatalf("mount m: %v", err)
		}
		before := map[string]VolumeInfo{}
		for _, n := range []string{"a", "b", "m"} {
			before[n] = stateOf(t, d, n)
		}
		stop()
		sf.Close()
		time.Sleep(time.Hour)

		// The kernel keeps a's mount (its Status knows no CMK, as for a
		// share) and lost b's while no daemon ran.
		svc2 := newFake()
		svc2.external = []VolumeStatus{{Name: "a", Kind: KindFUSE, Source: "/cipher/a", Target: "/mnt/a", State: ServiceMounted, WorkerPID: before["a"].WorkerPID}}
		d2 := New(cfgWith(vol("a", true), vol("b", false), vol("m", false)), Options{Service: svc2, State: openStateFile(t, dir), Backoff: fixedBackoff})
		stop = started(t, d2)
		defer stop()
		a := stateOf(t, d2, "a")
		if a.State != StateMounted || !a.Adopted || !a.Since.Equal(before["a"].Since) || a.KeyID != "cmk-1" || a.Provider != "local" || a.Retries != 1 {
			t.Errorf("a after restart: %+v\nbefore: %+v", a, before["a"])
		}
		if m := stateOf(t, d2, "m"); m.State != StateFailed || m.LastError != before["m"].LastError || m.ErrorKind != "key_disabled" || !m.Since.Equal(before["m"].Since) {
			t.Errorf("m after restart: %+v\nbefore: %+v", m, before["m"])
		}
		if b := stateOf(t, d2, "b"); b.State != StateFailed || b.ErrorKind != "gone" {
			t.Errorf("b after restart: %+v", b)
		}
		if svc2.ncalls("a")+svc2.ncalls("b")+svc2.ncalls("m") != 0 {
			t.Error("a restart mounted something")
		}
	})
}

// TestStateCorrupt: a damaged state file is reported and rebuilt from
// the kernel's view; the daemon starts and adopts what is mounted.
func TestStateCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		sf := openStateFile(t, dir)
		if err := os.WriteFile(sf.Path(), []byte(`{"version": 1, "state": {"volumes": [{"name": "a", "sta`), 0o600); err != nil {
			t.Fatal(err)
		}
		var logs tstest.Buffer
		svc := newFake()
		svc.external = []VolumeStatus{{Name: "a", Kind: KindFUSE, Source: "/cipher/a", Target: "/mnt/a", State: ServiceMounted, WorkerPID: 7}}
		d := New(cfgWith(vol("a", true)), Options{Service: svc, State: sf, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		stop := started(t, d)
		defer stop()
		if a := stateOf(t, d, "a"); a.State != StateMounted || !a.Adopted || svc.ncalls("a") != 0 {
			t.Errorf("a: %+v", a)
		}
		if !strings.Contains(logs.String(), "state file not used; rebuilt from what the kernel reports") || !strings.Contains(logs.String(), "is damaged") {
			t.Errorf("the damaged file is not reported:\n%s", logs.String())
		}
		recs, err := sf.Load(t.Context())
		if err != nil || len(recs) != 1 || recs[0].Name != "a" || recs[0].State != StateMounted || recs[0].WorkerPID != 7 {
			t.Errorf("rebuilt state: %+v %v", recs, err)
		}
	})
}

// TestStateLocked: a second daemon on the same state directory is
// refused with an error naming the first one's pid.
func TestStateLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	openStateFile(t, dir)
	_, err := OpenStateFile(dir)
	if !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), "in use by process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second open: %v", err)
	}
}
