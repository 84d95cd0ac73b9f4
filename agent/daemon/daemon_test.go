package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"kmsagent/agent/config"
)

// started runs d.Run in the bubble and returns a function that stops it
// and returns Run's error.
func started(t *testing.T, d *Daemon) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	synctest.Wait()
	return func() error {
		cancel()
		return <-errc
	}
}

func stateOf(t *testing.T, d *Daemon, name string) VolumeInfo {
	t.Helper()
	sts, err := d.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no volume %s in %+v", name, sts)
	return VolumeInfo{}
}

// TestStart: every auto volume is tried at once and on its own; a
// throttled one is retried with backoff until it mounts, a disabled key
// is tried once and failed, a non-auto volume is left alone; READY=1
// comes when each had its first attempt, and STATUS= says what is wrong.
func TestStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["b"] = []error{errThrottled, errDown, errThrottled}
		svc.results["c"] = []error{errDisabled}
		n := &fakeNotifier{}
		audit := &fakeAudit{}
		d := New(cfgWith(vol("a", true), vol("b", true), vol("c", true), vol("manual", false)),
			Options{Service: svc, Notify: n, Audit: audit, Backoff: fixedBackoff})
		stop := started(t, d)
		start := time.Now()

		if n.count("READY=1") != 1 {
			t.Fatalf("READY=1 not sent once after the first attempts: %q", n.all())
		}
		if got, want := n.lastStatus(), "1 volume unlocked, 2 failed: b (KMS throttled, retrying), c (key disabled)"; got != want {
			t.Errorf("STATUS=%s\nwant   %s", got, want)
		}
		for name, want := range map[string]string{"a": StateMounted, "b": StateRetrying, "c": StateFailed, "manual": StateUnmounted} {
			if s := stateOf(t, d, name); s.State != want {
				t.Errorf("%s: state %s, want %s", name, s.State, want)
			}
		}
		// The error names the volume: the service's name paths.
		if c := stateOf(t, d, "c"); c.ErrorKind != "key_disabled" || !strings.HasPrefix(c.LastError, "volume c: ") || !strings.Contains(c.LastError, "key disabled") {
			t.Errorf("c: %+v", c)
		}

		// b: retried after 0.75s, 1.5s, 3s (3/4 of 1s, 2s, 4s).
		time.Sleep(time.Hour)
		synctest.Wait()
		calls := svc.callTimes("b")
		if len(calls) != 4 {
			t.Fatalf("b: %d attempts, want 4", len(calls))
		}
		want := []time.Duration{0, 750 * time.Millisecond, 2250 * time.Millisecond, 5250 * time.Millisecond}
		for i, c := range calls {
			if c.Sub(start) != want[i] {
				t.Errorf("b attempt %d at %v, want %v", i, c.Sub(start), want[i])
			}
		}
		if s := stateOf(t, d, "b"); s.State != StateMounted || s.Retries != 3 || s.LastError != "" || s.WorkerPID == 0 {
			t.Errorf("b: %+v", s)
		}
		if svc.ncalls("c") != 1 || svc.ncalls("manual") != 0 {
			t.Errorf("c tried %d times, manual %d times; want 1 and 0", svc.ncalls("c"), svc.ncalls("manual"))
		}
		if got, want := n.lastStatus(), "2 volumes unlocked, 1 failed: c (key disabled)"; got != want {
			t.Errorf("STATUS=%s, want %s", got, want)
		}
		if len(audit.events) != 6 {
			t.Errorf("%d audit events, want one per attempt (6)", len(audit.events))
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n.count("STOPPING=1") != 1 || len(svc.unmounted()) != 0 {
			t.Errorf("stop: %q, unmounted %q", n.all(), svc.unmounted())
		}
	})
}

// TestSlowVolumeDoesNotBlock: a volume whose KMS call hangs delays
// READY=1 but not the others' mounts, nor the status.
func TestSlowVolumeDoesNotBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		release := make(chan struct{})
		svc.block["slow"] = release
		n := &fakeNotifier{}
		d := New(cfgWith(vol("slow", true), vol("a", true), vol("b", true)), Options{Service: svc, Notify: n, Backoff: fixedBackoff})
		stop := started(t, d)
		if s := stateOf(t, d, "a"); s.State != StateMounted {
			t.Errorf("a: %s while slow hangs", s.State)
		}
		if s := stateOf(t, d, "slow"); s.State != StateMounting {
			t.Errorf("slow: %s", s.State)
		}
		if n.count("READY=1") != 0 {
			t.Error("READY=1 before slow's first attempt")
		}
		if got := n.lastStatus(); got != "2 volumes unlocked, 1 mounting" {
			t.Errorf("STATUS=%s", got)
		}
		close(release)
		synctest.Wait()
		if n.count("READY=1") != 1 || n.lastStatus() != "3 volumes unlocked" {
			t.Errorf("after release: %q", n.all())
		}
		stop()
	})
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	for attempt := range 40 {
		nominal := min(time.Second<<min(attempt, 20), 10*time.Second)
		for range 20 {
			d := b.Delay(attempt)
			if d < nominal/2 || d > nominal {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, nominal/2, nominal)
			}
		}
	}
	if d := (Backoff{}).Delay(1000); d > 5*time.Minute {
		t.Fatalf("default cap exceeded: %v", d)
	}
}

// TestBackoffFromConfig: [agent] retry_min_delay and retry_max_delay
// space the retries when the Options leave the bounds to them, and a
// reload's values apply to the next wait.
func TestBackoffFromConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		for range 10 {
			svc.results["a"] = append(svc.results["a"], errDown)
		}
		cfg := cfgWith(vol("a", true))
		cfg.Agent.RetryMinDelay, cfg.Agent.RetryMaxDelay = config.Duration(time.Hour), config.Duration(2*time.Hour)
		reloaded := cfgWith(vol("a", true))
		reloaded.Agent.RetryMinDelay, reloaded.Agent.RetryMaxDelay = config.Duration(time.Minute), config.Duration(time.Minute)
		d := New(cfg, Options{Service: svc, Backoff: Backoff{Rand: func() float64 { return 0 }}, Load: func() (*config.Config, error) { return reloaded, nil }})
		stop := started(t, d)
		synctest.Wait()
		if s := stateOf(t, d, "a"); s.State != StateRetrying || time.Until(s.NextRetry) != 30*time.Minute {
			t.Fatalf("after the first attempt: %+v, want the next in 30m (half of retry_min_delay, no jitter)", s)
		}
		if _, err := d.Reload(t.Context(), "test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if s := stateOf(t, d, "a"); s.Retries != 2 || time.Until(s.NextRetry) != 30*time.Second {
			t.Fatalf("after the reload: %+v, want the next retry in 30s (the reloaded retry_max_delay)", s)
		}
		stop()
	})
}

// TestBackoffCapped: a KMS that stays down is retried forever at the
// capped interval.
func TestBackoffCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		for range 200 {
			svc.results["a"] = append(svc.results["a"], errDown)
		}
		d := New(cfgWith(vol("a", true)), Options{Service: svc, Backoff: fixedBackoff})
		stop := started(t, d)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		calls := svc.callTimes("a")
		for i := 5; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap != 6*time.Second {
				t.Fatalf("gap %d: %v, want the capped 6s", i, gap)
			}
		}
		if len(calls) < 90 {
			t.Fatalf("only %d attempts in 10 minutes", len(calls))
		}
		if s := stateOf(t, d, "a"); s.State != StateRetrying || s.ErrorKind != "kms_unavailable" || s.NextRetry.IsZero() {
			t.Errorf("%+v", s)
		}
		stop()
	})
}

// TestManualMount: mounting a failed volume tries again and returns the
// attempt's error; mounting one in backoff tries at once.
func TestManualMount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["c"] = []error{errDisabled, errDisabled}
		svc.results["b"] = []error{errThrottled}
		d := New(cfgWith(vol("b", true), vol("c", true), vol("m", false)), Options{Service: svc, Backoff: Backoff{Base: time.Hour, Max: time.Hour}})
		stop := started(t, d)
		if _, err := d.Mount(t.Context(), "c", "uid=0"); !errors.Is(err, errDisabled.Kind) {
			t.Fatalf("mount c: %v", err)
		}
		if info, err := d.Mount(t.Context(), "c", "uid=0"); err != nil || info.State != StateMounted {
			t.Fatalf("mount c again: %v %+v", err, info)
		}
		before := time.Now()
		if info, err := d.Mount(t.Context(), "b", "uid=0"); err != nil || info.State != StateMounted {
			t.Fatalf("mount b: %v %+v", err, info)
		}
		if time.Since(before) != 0 {
			t.Errorf("mount of a volume in backoff waited %v", time.Since(before))
		}
		if info, err := d.Mount(t.Context(), "m", "uid=0"); err != nil || info.State != StateMounted {
			t.Fatalf("mount m: %v %+v", err, info)
		}
		if _, err := d.Mount(t.Context(), "nope", "uid=0"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("mount nope: %v", err)
		}
		n := svc.ncalls("m")
		if _, err := d.Mount(t.Context(), "m", "uid=0"); err != nil || svc.ncalls("m") != n {
			t.Fatalf("mounting a mounted volume called the service: %v", err)
		}
		stop()
	})
}

func TestUnmount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["r"] = []error{errThrottled, errThrottled}
		d := New(cfgWith(vol("a", true), vol("r", true)), Options{Service: svc, Backoff: fixedBackoff})
		stop := started(t, d)
		if err := d.Unmount(t.Context(), "/mnt/a", false, "uid=0"); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, d, "a"); s.State != StateUnmounted {
			t.Errorf("a: %+v", s)
		}
		// A volume being retried just stops.
		if err := d.Unmount(t.Context(), "r", false, "uid=0"); err != nil {
			t.Fatal(err)
		}
		n := svc.ncalls("r")
		time.Sleep(time.Hour)
		synctest.Wait()
		if svc.ncalls("r") != n || stateOf(t, d, "r").State != StateUnmounted {
			t.Errorf("r still retried after unmount")
		}
		if got := svc.unmounted(); len(got) != 1 || got[0] != "/mnt/a" {
			t.Errorf("service unmounts %q", got)
		}
		if err := d.Unmount(t.Context(), "x", false, "uid=0"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unmount x: %v", err)
		}
		stop()
	})
}

// TestAdopt: a restarted daemon adopts what the service reports mounted
// (and the state file's since time) instead of mounting again; a stale
// mount is mounted again.
func TestAdopt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.external = []VolumeStatus{
			{Name: "a", Kind: KindFUSE, Target: "/mnt/a", State: ServiceMounted, WorkerPID: 77, KeyID: "cmk-a"},
			{Name: "s", Kind: KindFUSE, Target: "/mnt/s", State: ServiceStale},
			{Name: "cli", Kind: KindFUSE, Target: "/mnt/cli", State: ServiceMounted, WorkerPID: 88},
			{Kind: KindFUSE, Source: "/cipher/elsewhere", Target: "/mnt/other", State: ServiceMounted},
		}
		since := time.Now().Add(-time.Hour)
		st := &fakeState{recs: []Record{{Name: "a", Kind: KindFUSE, Source: "/cipher/a", State: StateMounted, Since: since}}}
		d := New(cfgWith(vol("a", true), vol("s", true), vol("other", true)), Options{Service: svc, State: st})
		stop := started(t, d)
		if svc.ncalls("a") != 0 || svc.ncalls("s") != 1 || svc.ncalls("other") != 1 {
			t.Fatalf("calls a=%d s=%d other=%d, want 0, 1, 1 (another share on other's target is not other)", svc.ncalls("a"), svc.ncalls("s"), svc.ncalls("other"))
		}
		a := stateOf(t, d, "a")
		if a.State != StateMounted || !a.Adopted || a.WorkerPID != 77 || a.KeyID != "cmk-a" || !a.Since.Equal(since) {
			t.Errorf("a: %+v", a)
		}
		if cli := stateOf(t, d, "cli"); cli.Managed || cli.State != StateMounted || cli.WorkerPID != 88 {
			t.Errorf("cli: %+v", cli)
		}
		if recs, _ := st.Load(t.Context()); len(recs) != 3 {
			t.Errorf("state records %+v, want a, other and s", recs)
		}
		stop()
	})
}

func TestStopCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["r"] = []error{errThrottled}
		cfg := cfgWith(vol("a", true), vol("b", true), vol("r", true), vol("m", false))
		cfg.Agent.CloseOnStop = true
		d := New(cfg, Options{Service: svc, Backoff: Backoff{Base: time.Hour}})
		stop := started(t, d)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := svc.unmounted(); len(got) != 2 || got[0] != "/mnt/a" || got[1] != "/mnt/b" {
			t.Errorf("unmounted %q, want /mnt/a /mnt/b", got)
		}
	})
}

// TestReload: added volumes mount, removed ones stop (and stay mounted),
// unchanged ones are not touched, a bad config changes nothing.
func TestReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["gone-retrying"] = []error{errThrottled, errThrottled, errThrottled}
		next := cfgWith(vol("same", true), vol("new", true), vol("changed", true))
		var loadErr error
		load := func() (*config.Config, error) { return next, loadErr }
		changed := vol("changed", false)
		n := &fakeNotifier{}
		d := New(cfgWith(vol("same", true), vol("gone", true), vol("gone-retrying", true), changed),
			Options{Service: svc, Load: load, Notify: n, Backoff: fixedBackoff})
		stop := started(t, d)
		sameSince := stateOf(t, d, "same").Since
		time.Sleep(time.Second)

		loadErr = errors.New(`config /etc/kmsagent/agent.toml:3: unknown key volume.nmae`)
		if _, err := d.Reload(t.Context(), "sighup"); err == nil || !strings.Contains(err.Error(), "unknown key volume.nmae") || !strings.Contains(err.Error(), "running configuration stays") {
			t.Fatalf("bad reload: %v", err)
		}
		if len(d.Config().Volumes) != 4 {
			t.Fatal("bad config replaced the running one")
		}

		loadErr = nil
		res, err := d.Reload(t.Context(), "sighup")
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if strings.Join(res.Added, ",") != "new" || strings.Join(res.Removed, ",") != "gone,gone-retrying" || strings.Join(res.Changed, ",") != "changed" {
			t.Errorf("reload result %+v", res)
		}
		if svc.ncalls("same") != 1 {
			t.Errorf("unchanged volume mounted again")
		}
		if s := stateOf(t, d, "same"); !s.Since.Equal(sameSince) {
			t.Errorf("unchanged volume touched: since %v -> %v", sameSince, s.Since)
		}
		if s := stateOf(t, d, "new"); s.State != StateMounted {
			t.Errorf("new: %+v", s)
		}
		if s := stateOf(t, d, "changed"); s.State != StateMounted {
			t.Errorf("changed to auto: %+v", s)
		}
		if g := stateOf(t, d, "gone"); g.Managed || g.State != StateMounted {
			t.Errorf("removed volume: %+v; it must stay mounted, unmanaged", g)
		}
		n1 := svc.ncalls("gone-retrying")
		time.Sleep(time.Hour)
		synctest.Wait()
		if svc.ncalls("gone-retrying") != n1 {
			t.Error("removed volume still retried")
		}
		if len(svc.unmounted()) != 0 {
			t.Errorf("reload unmounted %q", svc.unmounted())
		}
		if n.count("RELOADING=1") != 2 || n.count("READY=1") != 3 {
			t.Errorf("notifications %q", n.all())
		}
		stop()
	})
}

func TestWatchdog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &fakeNotifier{}
		d := New(cfgWith(), Options{Service: newFake(), Notify: n, Watchdog: 10 * time.Second})
		stop := started(t, d)
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if c := n.count("WATCHDOG=1"); c != 12 {
			t.Errorf("%d watchdog pings in 61s at 5s, want 12", c)
		}
		if n.all()[0] != "STATUS=0 volumes unlocked" || n.count("READY=1") != 1 {
			t.Errorf("%q", n.all())
		}
		stop()
	})
}

// TestAttached: a disk that shows up retries the volumes on it at once,
// including one that failed because the disk was missing at start.
func TestAttached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.results["late"] = []error{errors.New("/dev/disk/by-uuid/x: no such device")}
		svc.results["wait"] = []error{errThrottled}
		d := New(cfgWith(vol("late", true), vol("wait", true), vol("other", false)), Options{Service: svc, Backoff: Backoff{Base: time.Hour}, Load: func() (*config.Config, error) { return cfgWith(), nil }})
		stop := started(t, d)
		if s := stateOf(t, d, "late"); s.State != StateFailed {
			t.Fatalf("late: %+v", s)
		}
		tried := d.Attached(func(src string) bool { return src != "/cipher/a" })
		synctest.Wait()
		if strings.Join(tried, ",") != "late,wait" {
			t.Errorf("tried %q", tried)
		}
		for _, n := range []string{"late", "wait"} {
			if s := stateOf(t, d, n); s.State != StateMounted {
				t.Errorf("%s: %+v", n, s)
			}
		}
		if svc.ncalls("other") != 0 {
			t.Error("a volume without auto was mounted on attach")
		}
		stop()
		if _, err := d.Reload(t.Context(), "x"); !errors.Is(err, ErrStopping) {
			t.Errorf("reload after stop: %v", err)
		}
	})
}

// TestRemovedWhileMounting: a volume removed by a reload during its
// first attempt does not hold READY=1 back, and a mount waiting on a
// volume that is unmounted meanwhile returns instead of hanging.
func TestRemovedWhileMounting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		svc.block["slow"] = make(chan struct{})
		svc.block["m"] = make(chan struct{})
		n := &fakeNotifier{}
		d := New(cfgWith(vol("slow", true), vol("m", false)), Options{Service: svc, Notify: n,
			Load: func() (*config.Config, error) { return cfgWith(vol("m", false)), nil }})
		stop := started(t, d)
		if n.count("READY=1") != 0 {
			t.Fatal("READY=1 while slow is mounting")
		}
		if _, err := d.Reload(t.Context(), "x"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n.count("READY=1") != 1 {
			t.Fatalf("READY=1 not sent after the volume holding it back was removed: %q", n.all())
		}
		errc := make(chan error, 1)
		go func() { _, err := d.Mount(t.Context(), "m", "uid=0"); errc <- err }()
		synctest.Wait()
		if err := d.Unmount(t.Context(), "m", false, "uid=0"); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "not mounted: the attempt was stopped") {
			t.Errorf("mount interrupted by unmount: %v", err)
		}
		stop()
	})
}

// TestGone: a mount that disappears under the daemon (worker killed,
// unmounted by hand) shows as failed, and mounting it works again; an
// auto share is mounted again by the daemon itself, found by the
// periodic check without anyone asking for the status.
func TestGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		n := &fakeNotifier{}
		d := New(cfgWith(vol("a", true), vol("b", true), vol("m", false)), Options{Service: svc, Notify: n, CheckEvery: 10 * time.Second})
		stop := started(t, d)
		if _, err := d.Mount(t.Context(), "m", "uid=0"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		calls := svc.ncalls("a")
		svc.mu.Lock()
		delete(svc.mounted, "a")
		delete(svc.mounted, "m")
		svc.mu.Unlock()

		time.Sleep(11 * time.Second) // one check
		synctest.Wait()
		a := stateOf(t, d, "a")
		if a.State != StateMounted || svc.ncalls("a") != calls+1 {
			t.Errorf("auto share a after its worker died: %+v, %d mount calls (was %d)", a, svc.ncalls("a"), calls)
		}
		m := stateOf(t, d, "m")
		if m.State != StateFailed || m.ErrorKind != "gone" || !strings.Contains(m.LastError, "the kernel reports it not mounted") {
			t.Errorf("m: %+v", m)
		}
		if s := stateOf(t, d, "b"); s.State != StateMounted {
			t.Errorf("b: %+v", s)
		}
		if got := n.lastStatus(); got != "2 volumes unlocked, 1 failed: m (gone)" {
			t.Errorf("STATUS=%s", got)
		}
		if info, err := d.Mount(t.Context(), "m", "uid=0"); err != nil || info.State != StateMounted {
			t.Errorf("mount again: %+v %v", info, err)
		}
		stop()
	})
}

// TestStatusDuringMount: a share whose start-up mount finishes while a
// status request reads what is mounted is missing from what was read;
// it is not declared gone and mounted again. synctest's clock stands
// still, so the mount and the read fall on the same clock reading, as
// they can on a real host.
func TestStatusDuringMount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc := newFake()
		release := make(chan struct{})
		svc.block["a"] = release
		n := &fakeNotifier{}
		d := New(cfgWith(vol("a", true)), Options{Service: svc, Notify: n, Backoff: fixedBackoff})
		stop := started(t, d)
		read, resume := make(chan struct{}), make(chan struct{})
		svc.mu.Lock()
		svc.afterStatus = func() {
			close(read)
			<-resume
		}
		svc.mu.Unlock()
		type answer struct {
			sts []VolumeInfo
			err error
		}
		answered := make(chan answer, 1)
		go func() {
			sts, err := d.Status(t.Context())
			answered <- answer{sts, err}
		}()
		<-read // a is not mounted yet in what Status has
		svc.mu.Lock()
		svc.afterStatus = nil
		svc.mu.Unlock()
		close(release)
		synctest.Wait() // a's mount has finished, and READY=1 is sent
		close(resume)
		a := <-answered
		if a.err != nil {
			t.Fatal(a.err)
		}
		if len(a.sts) != 1 || a.sts[0].State != StateMounted || a.sts[0].LastError != "" {
			t.Errorf("the status read during the mount: %+v", a.sts)
		}
		synctest.Wait()
		if s := stateOf(t, d, "a"); s.State != StateMounted || s.LastError != "" || svc.ncalls("a") != 1 {
			t.Errorf("a after that status: %+v, %d mount calls", s, svc.ncalls("a"))
		}
		if n.count("READY=1") != 1 || n.lastStatus() != "1 volume unlocked" {
			t.Errorf("notifications: %q", n.all())
		}
		stop()
	})
}
