package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"kmsagent/agent/audit"
	"kmsagent/agent/peercred"
)

// openAuditLog opens a real audit log in a fresh directory.
func openAuditLog(t *testing.T) (*audit.Log, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "log")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.log")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// TestAuditLog: every mount attempt and every unmount is one record in
// the real log, with the caller (the daemon for boot mounts, the control
// API's peer for requests), the volume, its kind, CMK and provider, and
// the result with its error kind.
func TestAuditLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, path := openAuditLog(t)
		svc := newFake()
		svc.results["c"] = []error{errDisabled}
		d := New(cfgWith(vol("a", true), vol("c", true), vol("m", false)), Options{Service: svc, Audit: AuditLog{Log: l}, Backoff: fixedBackoff})
		stop := started(t, d)
		peer := peercred.WithPeer(t.Context(), &peercred.Peer{UID: 1000, PID: 4242})
		if _, err := d.Mount(peer, "m", "pid=4242 uid=1000"); err != nil {
			t.Fatal(err)
		}
		if err := d.Unmount(peer, "a", false, "pid=4242 uid=1000"); err != nil {
			t.Fatal(err)
		}
		stop()

		res, err := audit.ReadFiles(path)
		if err != nil || len(res.Damaged) != 0 {
			t.Fatalf("read: %v %+v", err, res)
		}
		type row struct {
			uid, pid                     int
			volume, op, result, cmk, err string
		}
		var got []row
		for _, r := range res.Records {
			if r.Kind != audit.KindShare || r.Time.IsZero() {
				t.Errorf("record %+v: kind or time", r)
			}
			e := ""
			if r.Error != "" {
				e = "error"
			}
			got = append(got, row{r.UID, r.PID, r.Volume, r.Op, r.Result, r.CMK, e})
		}
		// The boot attempts run concurrently; sort them by volume.
		slices.SortStableFunc(got[:2], func(a, b row) int { return strings.Compare(a.volume, b.volume) })
		me, pid := os.Getuid(), os.Getpid()
		want := []row{
			{me, pid, "a", audit.OpUnwrap, "ok", "cmk-1", ""},
			{me, pid, "c", audit.OpUnwrap, "key_disabled", "", "error"},
			{1000, 4242, "m", audit.OpUnwrap, "ok", "cmk-1", ""},
			{1000, 4242, "a", "unmount", "ok", "cmk-1", ""},
		}
		if !slices.Equal(got, want) {
			t.Errorf("records\n%+v\nwant\n%+v", got, want)
		}
		if res.Records[0].Comm == "" {
			t.Errorf("the daemon's own record has no command name: %+v", res.Records[0])
		}
	})
}

// TestAuditFailClosed: a mount whose record cannot be written is undone
// and the volume fails with an error that says why.
func TestAuditFailClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, _ := openAuditLog(t)
		l.Close() // every Write fails
		svc := newFake()
		n := &fakeNotifier{}
		d := New(cfgWith(vol("a", true)), Options{Service: svc, Notify: n, Audit: AuditLog{Log: l}, Backoff: fixedBackoff})
		stop := started(t, d)
		a := stateOf(t, d, "a")
		if a.State != StateFailed || a.ErrorKind != "audit" || !strings.Contains(a.LastError, "not recorded in the audit log") ||
			!strings.Contains(a.LastError, "closed again") {
			t.Errorf("a: %+v", a)
		}
		if got := svc.unmounted(); !slices.Equal(got, []string{"/mnt/a"}) {
			t.Errorf("unmounted %q, want the unaudited mount undone", got)
		}
		if got := n.lastStatus(); got != "0 volumes unlocked, 1 failed: a (audit)" {
			t.Errorf("STATUS=%s", got)
		}
		stop()
	})
}
