// Package daemon is the core of `kmsagent run`: it owns the configuration
// and the volume table, mounts the auto volumes at start, retries what
// the KMS could not answer, and serves mount, unmount, reload and status
// to the control API.
//
// Design:
//   - Each volume has its own goroutine while it is being mounted, with
//     its own exponential backoff (with jitter, capped) on throttling and
//     unavailability. A wrong, disabled or missing key is never retried:
//     the volume is failed with the error until an admin mounts it again.
//     One volume waiting on the KMS never blocks another, nor the table:
//     the service is called without the daemon's lock.
//   - The daemon never holds a plaintext key: the Service starts workers
//     that unwrap, and only they see key bytes.
//   - Mounts outlive the daemon. Stopping it leaves them in place unless
//     close_on_stop is set, and a new daemon adopts what the Service
//     reports as mounted (and what the state file says it opened), so a
//     restart or an upgrade does not cut I/O.
//   - A reload changes only what changed: added volumes are mounted when
//     auto, removed ones stop being retried, and a mounted volume is
//     never unmounted by a configuration change (that is an admin's
//     explicit unmount). A configuration that does not load leaves the
//     running one in place.
//   - systemd hears READY=1 once every auto volume has had its first
//     attempt, a STATUS= line kept current, watchdog pings from the main
//     loop, and STOPPING=1.
//   - Every mount attempt (the worker asks the KMS for the key) and
//     every unmount is an audit Event, with the control API's peer as
//     the caller, or the daemon itself for what it does on its own. A
//     mount the Auditor cannot record is closed again and the volume
//     fails with ErrAudit (fail closed); an Auditor that fails open
//     returns nil instead. The Event is written after the attempt, since
//     only then are its CMK and result known.
//   - The state file holds the whole table, saved when it changes: what
//     the kernel cannot tell a restarted daemon (since, CMK, retries,
//     the last error, volumes opened on attach). The kernel's view
//     decides what is mounted; a record whose volume the kernel no
//     longer has becomes failed (gone), and an unreadable file is
//     reported and rebuilt. The file's lock keeps a second daemon out.
//   - Disk hot-plug is in hotplug.go.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"kmsagent/agent/config"
	"kmsagent/agent/errkind"
	"kmsagent/agent/peercred"
	"kmsagent/kmsclient"
)

// Volume states the daemon reports.
const (
	StateMounting  = "mounting"  // first attempt in flight
	StateMounted   = "mounted"   // up (mounted, or opened for a LUKS2 volume without target)
	StateRetrying  = "retrying"  // the KMS was throttling or unavailable; the next attempt is scheduled
	StateFailed    = "failed"    // an error retrying cannot fix (key, ciphertext, device)
	StateUnmounted = "unmounted" // not mounted, nothing scheduled
)

// Options are the daemon's collaborators; only Service is required.
type Options struct {
	Service Service
	// Load reads the configuration again, for Reload.
	Load   func() (*config.Config, error)
	Notify Notifier   // nil: no sd_notify
	State  StateStore // nil: no state file
	Audit  Auditor    // nil: no audit log
	// Devices answers hot-plug's questions about block devices; nil:
	// no hot-plug (Hotplug refuses to run).
	Devices Devices
	Logger  *slog.Logger
	// Backoff spaces a volume's retries; where its Base and Max are
	// zero, [agent] retry_min_delay and retry_max_delay set them.
	Backoff Backoff
	// Applied is called with each configuration a reload put in
	// force, for what lives outside the daemon (the control socket's
	// admin group).
	Applied func(*config.Config)
	// Watchdog is systemd's watchdog interval (WATCHDOG_USEC); zero for
	// none. The main loop pings at half of it.
	Watchdog time.Duration
	// CheckEvery is how often the main loop compares the table with
	// what the kernel reports, so that a share whose worker died is
	// noticed (and, when auto, mounted again) without anyone asking
	// for the status; zero for never.
	CheckEvery time.Duration
}

// Daemon is the running agent.
type Daemon struct {
	svc     Service
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	mu       sync.Mutex
	cfg      *config.Config
	vols     map[string]*volume
	stopping bool
	ready    bool          // READY=1 was sent
	status   string        // last STATUS= sent
	saved    []Record      // what the state file holds
	started  chan struct{} // closed when Start has built the table
	// mounts numbers the volumes' transitions to mounted, so Status can
	// tell a mount made after it read the kernel's view (see Status).
	mounts   uint64
	reloadMu sync.Mutex
	wg       sync.WaitGroup // mounting goroutines; none starts once stopping
}

// volume is one entry of the table. Fields are guarded by Daemon.mu.
type volume struct {
	cfg       config.Volume
	state     string
	mounted   Mounted
	adopted   bool
	lastErr   error
	retries   int
	nextRetry time.Time
	since     time.Time // of the current state
	mountNo   uint64    // Daemon.mounts when it last became mounted
	run       *run      // the goroutine mounting it, nil when none
	// below are the devices a mounted LUKS2 volume sits on, noted when
	// it came up (see hotplug.go).
	below []uint64
	// discovered: unlocked on attach without a [[volume]]
	// (auto_unlock_attached).
	discovered bool
	// closing: the daemon is unmounting it (asked to, or its disk went).
	// The kernel stops listing the mount before the unmount returns (a
	// lazy detach comes first, the mapping's removal after), and Status
	// must not take that for a mount gone behind the daemon's back.
	closing bool
}

// run is one mounting goroutine: cancel stops it, kick cuts its backoff
// short, attempted is closed (and replaced) after each attempt, done when
// it has returned.
type run struct {
	cancel    context.CancelFunc
	kick      chan caller // who asked for the attempt cut short
	attempted chan struct{}
	first     chan struct{} // closed after the first attempt only
	done      chan struct{}
}

// caller is who a mount or unmount is done for, for the audit log: the
// control API's peer, or the daemon itself for what it does on its own.
type caller struct {
	actor    string
	uid, pid int
}

// self is the daemon acting on its own (boot, hotplug, stop).
func self(actor string) caller { return caller{actor: actor, uid: os.Getuid(), pid: os.Getpid()} }

// callerOf is the peer of a control API request (its context carries
// the connection's credentials), or the daemon itself for a request that
// did not come over the socket (SIGHUP).
func callerOf(ctx context.Context, actor string) caller {
	if p := peercred.FromContext(ctx); p != nil && p.Err == nil {
		return caller{actor: actor, uid: p.UID, pid: p.PID}
	}
	return self(actor)
}

// New makes a daemon for cfg; Start brings it up.
func New(cfg *config.Config, opts Options) *Daemon {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{svc: opts.Service, opts: opts, log: opts.Logger, cfg: cfg, vols: map[string]*volume{}, started: make(chan struct{})}
	d.metrics = newMetrics(d)
	return d
}

// Metrics returns the daemon's Prometheus metrics.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Config returns the configuration in force.
func (d *Daemon) Config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// SpecOf is the Service's spec of a configured volume.
func SpecOf(v config.Volume) Spec {
	return Spec{Name: v.Name, Kind: Kind(v.Type), Source: v.Source, Target: v.Target, FSType: v.FSType,
		Options: slices.Clone(v.Options), ReadOnly: v.ReadOnly}
}

// Start adopts what is already mounted and starts mounting every auto
// volume. It returns once the goroutines are started; Ready tells when
// each had its first attempt.
//
// The kernel's view (the Service's Status) decides what is mounted; the
// state file only adds what the kernel cannot tell: since when, which
// CMK, the retries, and the last error of a volume that is not mounted.
// A state file that cannot be read is reported and rebuilt from the
// kernel's view by the next save.
func (d *Daemon) Start(ctx context.Context) error {
	mounted, err := d.svc.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading what is mounted: %w", err)
	}
	var recs []Record
	if d.opts.State != nil {
		if recs, err = d.opts.State.Load(ctx); err != nil {
			d.log.Error("state file not used; rebuilt from what the kernel reports", "error", err)
			recs = nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for _, vc := range d.cfg.Volumes {
		v := &volume{cfg: vc, state: StateUnmounted, since: now}
		d.vols[vc.Name] = v
		rec, hasRec := findRecord(recs, vc)
		if st, ok := findMounted(mounted, vc); ok {
			v.state, v.adopted = StateMounted, true
			d.mounts++
			v.mountNo = d.mounts
			v.mounted = Mounted{Spec: SpecOf(vc), WorkerPID: st.WorkerPID, Device: st.Device, KeyID: st.KeyID, Provider: st.Provider, Since: now, UnlockedBy: st.UnlockedBy}
			if hasRec && rec.State == StateMounted {
				v.restoreMounted(rec)
			}
			d.adoptFromInitramfsLocked(v, st, rec, hasRec)
			v.below = d.noteBelow(v.mounted)
			d.log.Info("adopted a mounted volume", "volume", vc.Name, "target", vc.Target, "worker_pid", st.WorkerPID, "device", st.Device)
			continue
		}
		if hasRec {
			v.restoreUnmounted(rec)
		}
		if vc.Auto {
			lastErr := v.lastErr
			d.startRun(v, self("boot"))
			v.lastErr = lastErr // shown until the attempt ends
		}
	}
	d.adoptDiscoveredLocked(recs, mounted, now)
	d.saveLocked()
	d.notifyStatusLocked()
	close(d.started)
	return nil
}

// adoptDiscoveredLocked takes back the volumes an earlier daemon
// unlocked on attach (auto_unlock_attached) that are still open. One
// that is not is forgotten: hot-plug finds it again if its disk is
// there. d.mu is held.
func (d *Daemon) adoptDiscoveredLocked(recs []Record, mounted []VolumeStatus, now time.Time) {
	for _, r := range recs {
		u, ok := strings.CutPrefix(r.Name, discoveredPrefix)
		if !r.Discovered || !ok || d.vols[r.Name] != nil {
			continue
		}
		vc := discoveredConfig(u)
		st, ok := findMounted(mounted, vc)
		if !ok || vc.Source != r.Source {
			continue
		}
		d.mounts++
		v := &volume{cfg: vc, discovered: true, state: StateMounted, adopted: true, since: now, mountNo: d.mounts}
		v.mounted = Mounted{Spec: SpecOf(vc), Device: st.Device, KeyID: st.KeyID, Provider: st.Provider, Since: now}
		v.restoreMounted(r)
		v.below = d.noteBelow(v.mounted)
		d.vols[r.Name] = v
		d.log.Info("adopted a volume unlocked on attach", "volume", r.Name, "device", st.Device)
	}
}

// adoptFromInitramfsLocked dates a volume the initramfs unlocked from
// then, and puts that key use into the audit log, once: unless a daemon
// of this boot recorded the volume mounted since. The initramfs has no
// audit log of its own. d.mu is held.
func (d *Daemon) adoptFromInitramfsLocked(v *volume, st VolumeStatus, rec Record, hasRec bool) {
	if st.UnlockedBy != "initramfs" || st.UnlockedAt.IsZero() {
		return
	}
	if !hasRec || rec.State != StateMounted || rec.Since.Before(st.UnlockedAt) {
		// pid 0: no process of this system asked; the initramfs did.
		_ = d.audit(caller{actor: ActorInitramfs}, Event{Op: OpMount, Volume: v.cfg.Name, Kind: KindLUKS, KeyID: st.KeyID, Provider: st.Provider})
	}
	v.mounted.Since, v.since = st.UnlockedAt, st.UnlockedAt
}

// findRecord finds the state file's record of vc: the same name, kind
// and source (a volume whose configuration changed while the daemon was
// down starts afresh).
func findRecord(recs []Record, vc config.Volume) (Record, bool) {
	for _, r := range recs {
		if r.Name == vc.Name && r.Kind == Kind(vc.Type) && r.Source == vc.Source {
			return r, true
		}
	}
	return Record{}, false
}

// restoreMounted adds to an adopted volume what only the record knows.
func (v *volume) restoreMounted(r Record) {
	if !r.Since.IsZero() {
		v.mounted.Since, v.since = r.Since, r.Since
	}
	if v.mounted.KeyID == "" {
		v.mounted.KeyID, v.mounted.Provider = r.KeyID, r.Provider
	}
	v.retries = r.Retries
}

// restoreUnmounted gives a volume the kernel does not report mounted its
// last error: the one recorded, or, for a volume the record has mounted,
// that its mount went away while no daemon ran. A volume without auto
// then stays failed with it; an auto one is tried again.
func (v *volume) restoreUnmounted(r Record) {
	switch {
	case r.State == StateMounted:
		v.lastErr = fmt.Errorf("volume %s: %w: mounted when the daemon stopped, not mounted when it started", r.Name, ErrGone)
		v.state = StateFailed
	case r.LastError != "" && (r.State == StateFailed || r.State == StateRetrying):
		v.lastErr = errkind.Restored(r.LastError, r.ErrorKind)
		v.state, v.since, v.retries = StateFailed, r.Since, r.Retries
	}
}

// findMounted finds vc among the Service's mounted volumes, by name or
// by target. Stale and detached entries do not count: mounting again is
// how they are repaired. Nor does another kind of volume, or a share of
// another cipher directory, on the same target: that is not vc, and the
// Service refuses to mount vc over it.
func findMounted(sts []VolumeStatus, vc config.Volume) (VolumeStatus, bool) {
	for _, st := range sts {
		if st.State != ServiceMounted || st.Kind != "" && st.Kind != Kind(vc.Type) {
			continue
		}
		if st.Kind == KindFUSE && st.Source != "" && st.Source != vc.Source {
			continue
		}
		if st.Name == vc.Name || vc.Target != "" && st.Target == vc.Target {
			return st, true
		}
	}
	return VolumeStatus{}, false
}

// Ready returns a channel closed when every volume being mounted at the
// time of the call has had its first attempt (or ctx ends).
func (d *Daemon) Ready(ctx context.Context) <-chan struct{} {
	d.mu.Lock()
	var firsts []chan struct{}
	for _, v := range d.vols {
		if v.run != nil {
			firsts = append(firsts, v.run.first)
		}
	}
	d.mu.Unlock()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for _, f := range firsts {
			select {
			case <-f:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// Run starts the daemon, tells systemd when it is ready, pings the
// watchdog, and stops when ctx ends: with close_on_stop the volumes are
// closed, otherwise they stay mounted.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	ready := d.Ready(ctx)
	var tick, check <-chan time.Time
	if d.opts.Watchdog > 0 {
		t := time.NewTicker(d.opts.Watchdog / 2)
		defer t.Stop()
		tick = t.C
	}
	if d.opts.CheckEvery > 0 {
		t := time.NewTicker(d.opts.CheckEvery)
		defer t.Stop()
		check = t.C
	}
	for {
		select {
		case <-check:
			if _, err := d.Status(ctx); err != nil {
				d.log.Warn("checking what is mounted", "error", err)
			}
		case <-ready:
			ready = nil
			// Under the lock, so a reload sees READY=1 either sent
			// before its RELOADING=1 or not at all.
			d.mu.Lock()
			d.notify("READY=1")
			d.ready = true
			d.status = "" // send it again after READY
			d.notifyStatusLocked()
			d.mu.Unlock()
			d.log.Info("ready", "status", d.StatusLine())
			// Start-up is the daemon's allocation peak (every auto
			// volume mounted at once); what it left is returned to the
			// system now rather than by the background scavenger over
			// the next minutes, so the idle daemon is as small as it
			// will stay. One collection, once.
			debug.FreeOSMemory()
		case <-tick:
			// Only when the table's lock can be had: a daemon wedged
			// on it stops pinging and systemd restarts it, which the
			// mounts survive.
			d.mu.Lock()
			d.mu.Unlock()
			d.notify("WATCHDOG=1")
		case <-ctx.Done():
			d.notify("STOPPING=1")
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
			defer cancel()
			return d.Stop(stopCtx)
		}
	}
}

// Stop stops every mounting goroutine and, with close_on_stop, closes
// every mounted volume. Without it the mounts stay for the next daemon
// to adopt.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	d.stopping = true
	closeAll := d.cfg.Agent.CloseOnStop
	for _, v := range d.vols {
		if v.run != nil {
			v.run.cancel()
		}
	}
	d.mu.Unlock()
	// Also those a reload canceled: none is left behind.
	d.wg.Wait()
	if !closeAll {
		d.log.Info("stopping; volumes stay mounted (close_on_stop = false)")
		return nil
	}
	var errs []error
	for _, name := range d.names() {
		d.mu.Lock()
		v := d.vols[name]
		up := v != nil && v.state == StateMounted
		d.mu.Unlock()
		if !up {
			continue
		}
		if err := d.unmountVolume(ctx, v, false, self("stop")); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.vols))
	for n := range d.vols {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// startRun starts the mounting goroutine of v. d.mu is held.
func (d *Daemon) startRun(v *volume, who caller) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, kick: make(chan caller, 1), attempted: make(chan struct{}), first: make(chan struct{}), done: make(chan struct{})}
	v.run = r
	v.retries = 0
	v.nextRetry = time.Time{}
	v.setState(StateMounting)
	d.wg.Add(1)
	go d.mountLoop(ctx, v, r, SpecOf(v.cfg), who)
	return r
}

// backoffLocked is Options.Backoff, its bounds where it leaves them zero
// taken from the configuration in force ([agent] retry_min_delay,
// retry_max_delay), so a reload changes them for the next wait. d.mu is
// held.
func (d *Daemon) backoffLocked() Backoff {
	b := d.opts.Backoff
	if b.Base == 0 {
		b.Base = d.cfg.Agent.RetryMinDelay.Std()
	}
	if b.Max == 0 {
		b.Max = d.cfg.Agent.RetryMaxDelay.Std()
	}
	return b
}

func (v *volume) setState(s string) {
	if v.state != s {
		v.state, v.since = s, time.Now()
	}
}

// mountLoop mounts v, retrying with backoff while the KMS throttles or
// is unavailable.
func (d *Daemon) mountLoop(ctx context.Context, v *volume, r *run, spec Spec, who caller) {
	defer d.wg.Done()
	defer close(r.done)
	defer r.cancel()
	firstDone := false
	// However the goroutine ends (replaced by a reload, canceled by an
	// unmount or a stop), whoever waits for its next attempt or its
	// first one is woken.
	defer func() {
		d.mu.Lock()
		close(r.attempted)
		d.mu.Unlock()
		if !firstDone {
			close(r.first)
		}
	}()
	for attempt := 0; ; attempt++ {
		start := time.Now()
		m, err := d.svc.Mount(ctx, spec)
		if err != nil {
			// The status, the log and a mount request's answer
			// name the volume; the service's errors name paths.
			err = fmt.Errorf("volume %s: %w", spec.Name, err)
		}
		d.metrics.observe(spec.Kind, time.Since(start), err)
		if aerr := d.audit(who, Event{Op: OpMount, Volume: spec.Name, Kind: spec.Kind, KeyID: m.KeyID, Provider: m.Provider, Err: err}); err == nil && aerr != nil {
			err = d.undoUnaudited(ctx, spec, aerr)
		}
		var below []uint64
		if err == nil {
			below = d.noteBelow(m)
		}

		d.mu.Lock()
		if v.run != r { // replaced or removed meanwhile
			d.mu.Unlock()
			return
		}
		var wait time.Duration
		switch {
		case err == nil:
			if m.Since.IsZero() {
				m.Since = time.Now()
			}
			v.mounted, v.lastErr, v.nextRetry, v.below = m, nil, time.Time{}, below
			v.setState(StateMounted)
			d.mounts++
			v.mountNo = d.mounts
			d.log.Info("volume mounted", "volume", spec.Name, "target", spec.Target, "key_id", m.KeyID, "worker_pid", m.WorkerPID, "device", m.Device, "attempts", attempt+1)
		case ctx.Err() != nil:
			v.lastErr = err
			v.setState(StateUnmounted)
		case kmsclient.Retryable(err):
			wait = d.backoffLocked().Delay(attempt)
			v.lastErr, v.retries, v.nextRetry = err, v.retries+1, time.Now().Add(wait)
			v.setState(StateRetrying)
			d.log.Warn("volume not mounted; retrying", "volume", spec.Name, "error", err, "retry_in", wait.Round(time.Millisecond), "retries", v.retries)
		default:
			v.lastErr, v.nextRetry = err, time.Time{}
			v.setState(StateFailed)
			d.log.Error("volume failed; not retried", "volume", spec.Name, "error", err)
		}
		if wait == 0 {
			v.run = nil
		}
		d.saveLocked()
		d.notifyStatusLocked()
		attempted := r.attempted
		r.attempted = make(chan struct{})
		d.mu.Unlock()
		close(attempted)
		if !firstDone {
			firstDone = true
			close(r.first)
		}
		if wait == 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case who = <-r.kick:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			d.mu.Lock()
			if v.run == r {
				v.run = nil
				v.nextRetry = time.Time{}
				v.setState(StateUnmounted)
				d.notifyStatusLocked()
			}
			d.mu.Unlock()
			return
		}
	}
}

// audit records e for who. The error is the Auditor's: the event is not
// on record.
func (d *Daemon) audit(who caller, e Event) error {
	if d.opts.Audit == nil {
		return nil
	}
	e.Time, e.Actor, e.UID, e.PID = time.Now(), who.actor, who.uid, who.pid
	// Not the mount's context: a mount that succeeded as the daemon
	// stops is still recorded.
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	err := d.opts.Audit.Audit(ctx, e)
	if err != nil {
		d.log.Error("audit record not written", "op", e.Op, "volume", e.Volume, "error", err)
	}
	return err
}

// auditTimeout bounds the wait for the audit log's other writers.
const auditTimeout = 30 * time.Second

// undoUnaudited closes a volume whose mount could not be recorded in the
// audit log (fail closed: a key use that is not on record is not kept)
// and returns the error the volume fails with.
func (d *Daemon) undoUnaudited(ctx context.Context, spec Spec, aerr error) error {
	target := spec.Target
	if target == "" {
		target = spec.Name
	}
	err := fmt.Errorf("volume %s: %w: %v; the volume was closed again", spec.Name, ErrAudit, aerr)
	if uerr := d.svc.Unmount(context.WithoutCancel(ctx), target, false); uerr != nil {
		err = fmt.Errorf("volume %s: %w: %v; closing the volume again failed too, it stays mounted without a record: %v", spec.Name, ErrAudit, aerr, uerr)
	}
	d.log.Error("mount not kept: its key use is not in the audit log (the audit log fails closed)", "volume", spec.Name, "error", err)
	return err
}

// Mount mounts the configured volume name now and returns its status
// after the attempt: a volume waiting for its next retry is tried at
// once, a failed or unmounted one gets a new goroutine (which keeps
// retrying after a retryable error, as at start), and a mounted one is
// left alone. The error is the attempt's.
func (d *Daemon) Mount(ctx context.Context, name, actor string) (VolumeInfo, error) {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return VolumeInfo{}, ErrStopping
	}
	v := d.vols[name]
	if v == nil {
		d.mu.Unlock()
		return VolumeInfo{}, fmt.Errorf("%w: %s is not a [[volume]] in %s", ErrNotFound, name, d.cfgPathLocked())
	}
	if v.state == StateMounted {
		info := v.info()
		d.mu.Unlock()
		return info, nil
	}
	r := v.run
	who := callerOf(ctx, actor)
	if r == nil {
		r = d.startRun(v, who)
	} else {
		select {
		case r.kick <- who:
		default:
		}
	}
	attempted := r.attempted
	d.notifyStatusLocked()
	d.mu.Unlock()
	select {
	case <-attempted:
	case <-ctx.Done():
		return VolumeInfo{}, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	info := v.info()
	switch {
	case v.state == StateMounted:
		return info, nil
	case v.lastErr == nil || v.state == StateUnmounted:
		return info, fmt.Errorf("volume %s: not mounted: the attempt was stopped by an unmount, a reload or the daemon stopping", name)
	}
	return info, v.lastErr
}

func (d *Daemon) cfgPathLocked() string {
	if d.cfg.Path == "" {
		return "the configuration"
	}
	return d.cfg.Path
}

// Unmount unmounts a volume given by its name or its target. A volume
// that is still being retried just stops being retried. A target that no
// [[volume]] names is passed to the Service as it is, so an admin can
// unmount through the daemon what the CLI mounted.
func (d *Daemon) Unmount(ctx context.Context, nameOrTarget string, lazy bool, actor string) error {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return ErrStopping
	}
	v := d.vols[nameOrTarget]
	if v == nil {
		for _, w := range d.vols {
			if w.cfg.Target != "" && w.cfg.Target == nameOrTarget {
				v = w
			}
		}
	}
	d.mu.Unlock()
	who := callerOf(ctx, actor)
	if v == nil {
		if !strings.HasPrefix(nameOrTarget, "/") {
			return fmt.Errorf("%w: %s is neither a [[volume]] name nor a mount point", ErrNotFound, nameOrTarget)
		}
		err := d.svc.Unmount(ctx, nameOrTarget, lazy)
		d.audit(who, Event{Op: OpUnmount, Volume: nameOrTarget, Err: err})
		return err
	}
	return d.unmountVolume(ctx, v, lazy, who)
}

func (d *Daemon) unmountVolume(ctx context.Context, v *volume, lazy bool, who caller) error {
	d.mu.Lock()
	if r := v.run; r != nil {
		r.cancel()
		d.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		d.mu.Lock()
	}
	if v.state != StateMounted {
		v.setState(StateUnmounted)
		v.nextRetry = time.Time{}
		d.notifyStatusLocked()
		d.mu.Unlock()
		return nil
	}
	target := v.cfg.Target
	if target == "" {
		target = v.cfg.Name
	}
	name, keyID, provider := v.cfg.Name, v.mounted.KeyID, v.mounted.Provider
	v.closing = true
	d.mu.Unlock()
	err := d.svc.Unmount(ctx, target, lazy)
	d.audit(who, Event{Op: OpUnmount, Volume: name, Kind: Kind(v.cfg.Type), KeyID: keyID, Provider: provider, Err: err})
	d.mu.Lock()
	defer d.mu.Unlock()
	v.closing = false
	if err != nil {
		d.log.Error("unmount failed", "volume", name, "target", target, "error", err)
		return fmt.Errorf("volume %s: %w", name, err)
	}
	v.mounted, v.lastErr, v.adopted, v.below = Mounted{}, nil, false, nil
	v.setState(StateUnmounted)
	d.log.Info("volume unmounted", "volume", name, "target", target, "lazy", lazy)
	d.saveLocked()
	d.notifyStatusLocked()
	return nil
}

// Attached is the seam for disk hotplug (agent/uevent with agent/source):
// when a disk appears, the watcher calls it with a match that tells
// whether a volume's source (a path, UUID=..., evs:...) is that disk.
// Every matching auto volume that is not mounted is tried at once: one
// waiting for its retry, and one that failed because its disk was not
// there yet. It returns the names tried.
func (d *Daemon) Attached(match func(source string) bool) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return nil
	}
	var tried []string
	for _, name := range sortedKeys(d.vols) {
		v := d.vols[name]
		// A discovered volume comes back through Discovered, once its
		// header is seen again.
		if !v.cfg.Auto || v.discovered || v.state == StateMounted || !match(v.cfg.Source) {
			continue
		}
		if v.run == nil {
			d.startRun(v, self("attach"))
		} else {
			select {
			case v.run.kick <- self("attach"):
			default:
			}
		}
		tried = append(tried, name)
	}
	d.notifyStatusLocked()
	return tried
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
	// Notes are changes that take effect only later (a mounted volume's
	// new options, a new socket path).
	Notes []string `json:"notes,omitempty"`
}

// Reload reads the configuration again and applies it. On error the
// running configuration stays in force.
func (d *Daemon) Reload(ctx context.Context, actor string) (ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.opts.Load == nil {
		return ReloadResult{}, errors.New("reload: no configuration file to read")
	}
	// READY=1 ends the reload only if it had been sent before it: a
	// daemon that becomes ready during the reload (a volume holding it
	// back was removed) sends it from Run, and a second one would be a
	// duplicate.
	d.mu.Lock()
	wasReady := d.ready
	d.notify("RELOADING=1\n" + sddaemon.SdNotifyMonotonicUsec())
	d.mu.Unlock()
	if wasReady {
		defer d.notify("READY=1")
	}
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		return ReloadResult{}, ErrStopping
	}
	cfg, err := d.opts.Load()
	if err != nil {
		d.log.Error("reload failed; the running configuration stays", "error", err)
		return ReloadResult{}, fmt.Errorf("reload: %w; the running configuration stays", err)
	}
	res := d.apply(cfg, callerOf(ctx, actor))
	if d.opts.Applied != nil {
		d.opts.Applied(cfg)
	}
	d.log.Info("configuration reloaded", "added", res.Added, "removed", res.Removed, "changed", res.Changed, "notes", res.Notes)
	return res, nil
}

// apply makes cfg the configuration in force, touching only the volumes
// that changed.
func (d *Daemon) apply(cfg *config.Config, who caller) ReloadResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	var res ReloadResult
	old := d.cfg
	if cfg.Agent.Socket != old.Agent.Socket {
		res.Notes = append(res.Notes, "agent.socket changes at the next restart")
	}
	if cfg.Agent.StateDir != old.Agent.StateDir || cfg.Agent.AuditLog != old.Agent.AuditLog {
		res.Notes = append(res.Notes, "agent.state_dir and agent.audit_log change at the next restart")
	}
	if cfg.KMS.Provider != old.KMS.Provider {
		res.Notes = append(res.Notes, "the [kms] settings of running workers change when they are mounted again")
	}
	wanted := map[string]config.Volume{}
	for _, vc := range cfg.Volumes {
		wanted[vc.Name] = vc
	}
	for name, v := range d.vols {
		if _, ok := wanted[name]; ok {
			// A [[volume]] now names what was discovered: it is
			// configured from here on.
			v.discovered = false
			continue
		}
		if v.discovered {
			continue // not the configuration's: hot-plug's
		}
		if v.run != nil {
			v.run.cancel()
			v.run = nil
		}
		if v.state == StateMounted {
			res.Notes = append(res.Notes, fmt.Sprintf("%s was removed from the configuration but stays mounted on %s; unmount it with kmsagent umount %s", name, v.cfg.Target, orName(v.cfg)))
		}
		delete(d.vols, name)
		res.Removed = append(res.Removed, name)
	}
	now := time.Now()
	for _, vc := range cfg.Volumes {
		v := d.vols[vc.Name]
		switch {
		case v == nil:
			v = &volume{cfg: vc, state: StateUnmounted, since: now}
			d.vols[vc.Name] = v
			res.Added = append(res.Added, vc.Name)
			if vc.Auto && !d.stopping {
				d.startRun(v, who)
			}
		case sameVolume(v.cfg, vc):
			// Untouched.
		case v.state == StateMounted:
			v.cfg = vc
			res.Changed = append(res.Changed, vc.Name)
			res.Notes = append(res.Notes, fmt.Sprintf("%s is mounted: its new settings apply when it is mounted again", vc.Name))
		default:
			if v.run != nil {
				v.run.cancel()
				v.run = nil
			}
			v.cfg, v.lastErr = vc, nil
			v.setState(StateUnmounted)
			res.Changed = append(res.Changed, vc.Name)
			if vc.Auto && !d.stopping {
				d.startRun(v, who)
			}
		}
	}
	d.cfg = cfg
	sort.Strings(res.Added)
	sort.Strings(res.Removed)
	sort.Strings(res.Changed)
	d.saveLocked()
	d.notifyStatusLocked()
	return res
}

func orName(v config.Volume) string {
	if v.Target != "" {
		return v.Target
	}
	return v.Name
}

func sameVolume(a, b config.Volume) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Source == b.Source && a.Target == b.Target &&
		a.FSType == b.FSType && slices.Equal(a.Options, b.Options) && a.Auto == b.Auto && a.ReadOnly == b.ReadOnly
}

// VolumeInfo is one volume as the control API reports it.
type VolumeInfo struct {
	Name      string    `json:"name"`
	Kind      Kind      `json:"kind"`
	State     string    `json:"state"`
	Source    string    `json:"source"`
	Target    string    `json:"target,omitempty"`
	KeyID     string    `json:"key_id,omitempty"`
	Provider  string    `json:"provider,omitempty"`
	WorkerPID int       `json:"worker_pid,omitempty"`
	Device    string    `json:"device,omitempty"`
	Since     time.Time `json:"since"`
	Auto      bool      `json:"auto"`
	Adopted   bool      `json:"adopted,omitempty"` // mounted by an earlier daemon
	Managed   bool      `json:"managed"`           // a [[volume]] of the configuration
	// Discovered: unlocked on attach without a [[volume]]
	// (auto_unlock_attached), opened as /dev/mapper/NAME, not mounted.
	Discovered bool `json:"discovered,omitempty"`
	// UnlockedBy: a LUKS2 volume opened by the initramfs or cryptsetup
	// and adopted, not opened by kmsagent.
	UnlockedBy string    `json:"unlocked_by,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	ErrorKind  string    `json:"error_kind,omitempty"`
	Retries    int       `json:"retries"`
	NextRetry  time.Time `json:"next_retry,omitzero"`
}

func (v *volume) info() VolumeInfo {
	i := VolumeInfo{Name: v.cfg.Name, Kind: Kind(v.cfg.Type), State: v.state, Source: v.cfg.Source, Target: v.cfg.Target,
		Since: v.since, Auto: v.cfg.Auto, Adopted: v.adopted, Managed: !v.discovered, Discovered: v.discovered, Retries: v.retries, NextRetry: v.nextRetry}
	if v.state == StateMounted {
		i.KeyID, i.Provider, i.WorkerPID, i.Device, i.UnlockedBy = v.mounted.KeyID, v.mounted.Provider, v.mounted.WorkerPID, v.mounted.Device, v.mounted.UnlockedBy
	}
	if v.lastErr != nil {
		i.LastError, i.ErrorKind = v.lastErr.Error(), ErrorKind(v.lastErr)
	}
	return i
}

// Status lists the configured volumes, then what else the Service
// reports (mounted by the CLI, or removed from the configuration while
// mounted), sorted by name.
//
// The kernel's view wins: a volume the table has mounted that the
// Service no longer reports mounted (its worker died, an admin unmounted
// it by hand) becomes failed with ErrGone, so the status does not lie
// and a mount request mounts it again. An auto share is mounted again
// at once (the service removes the stale mount first): its worker is
// what died, and nothing else about it changed. An auto LUKS2 volume is
// not: its mapping goes when its disk does, and hot-plug brings it back
// when the disk returns.
func (d *Daemon) Status(ctx context.Context) ([]VolumeInfo, error) {
	// A mount that finishes while the Service reads the kernel's view
	// can be missing from it (its worker mounted after the read). It is
	// told by its number, not by the clock: a mount and the read can
	// fall on the same clock reading.
	d.mu.Lock()
	snap := d.mounts
	d.mu.Unlock()
	sts, err := d.svc.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading what is mounted: %w", err)
	}
	d.mu.Lock()
	gone := false
	for _, name := range sortedKeys(d.vols) {
		v := d.vols[name]
		// A mount that finished after the snapshot is not in it; one
		// being closed is the closer's to report.
		if v.state != StateMounted || v.mountNo > snap || v.closing {
			continue
		}
		what := "not mounted"
		for _, st := range sts {
			if st.Name == name || v.cfg.Target != "" && st.Target == v.cfg.Target {
				what = st.State
			}
		}
		if what == ServiceMounted {
			continue
		}
		v.lastErr = fmt.Errorf("volume %s: %w: the kernel reports it %s; kmsagent mount %s mounts it again", name, ErrGone, what, name)
		v.mounted, v.adopted = Mounted{}, false
		v.setState(StateFailed)
		d.log.Error("mounted volume gone", "volume", name, "kernel", what)
		gone = true
		if v.cfg.Auto && Kind(v.cfg.Type) == KindFUSE && v.run == nil && !d.stopping {
			d.log.Info("mounting the share again", "volume", name)
			d.startRun(v, self("remount"))
		}
	}
	if gone {
		d.saveLocked()
		d.notifyStatusLocked()
	}
	out := make([]VolumeInfo, 0, len(d.vols))
	for _, v := range d.vols {
		out = append(out, v.info())
	}
	d.mu.Unlock()
	for _, st := range sts {
		managed := false
		for _, i := range out {
			if (i.Managed || i.Discovered) && (i.Name == st.Name || i.Target != "" && i.Target == st.Target) {
				managed = true
			}
		}
		if managed {
			continue
		}
		state := StateMounted
		if st.State != ServiceMounted {
			state = StateFailed
		}
		name := st.Name
		if name == "" {
			name = st.Target // shares have no name of their own
		}
		i := VolumeInfo{Name: name, Kind: st.Kind, State: state, Source: st.Source, Target: st.Target,
			KeyID: st.KeyID, Provider: st.Provider, WorkerPID: st.WorkerPID, Device: st.Device, UnlockedBy: st.UnlockedBy}
		if !st.UnlockedAt.IsZero() {
			i.Since = st.UnlockedAt
		}
		if state == StateFailed {
			i.LastError = "the service reports it " + st.State
		}
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// counts returns the number of configured volumes in each state.
func (d *Daemon) counts() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := map[string]int{StateMounting: 0, StateMounted: 0, StateRetrying: 0, StateFailed: 0, StateUnmounted: 0}
	for _, v := range d.vols {
		c[v.state]++
	}
	return c
}

// StatusLine is the STATUS= text for systemd, e.g.
// "3 volumes unlocked, 1 failed: data2 (KMS throttled, retrying)".
func (d *Daemon) StatusLine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLineLocked()
}

func (d *Daemon) statusLineLocked() string {
	up, mounting := 0, 0
	var bad []string
	for _, name := range sortedKeys(d.vols) {
		v := d.vols[name]
		switch v.state {
		case StateMounted:
			up++
		case StateMounting:
			mounting++
		case StateRetrying:
			bad = append(bad, fmt.Sprintf("%s (%s, retrying)", name, reason(v.lastErr)))
		case StateFailed:
			bad = append(bad, fmt.Sprintf("%s (%s)", name, reason(v.lastErr)))
		}
	}
	s := fmt.Sprintf("%d volume%s unlocked", up, plural(up))
	if mounting > 0 {
		s += fmt.Sprintf(", %d mounting", mounting)
	}
	if len(bad) > 0 {
		s += fmt.Sprintf(", %d failed: %s", len(bad), strings.Join(bad, ", "))
	}
	return s
}

func sortedKeys(m map[string]*volume) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// reason is a few words on an error for the status line.
func reason(err error) string {
	switch k := ErrorKind(err); k {
	case errkind.Throttled:
		return "KMS throttled"
	case errkind.Unavailable:
		return "KMS unavailable"
	case errkind.Other:
		if err == nil {
			return "unknown error"
		}
		msg := err.Error()
		if len(msg) > 60 {
			msg = msg[:57] + "..."
		}
		return msg
	default:
		return strings.ReplaceAll(k, "_", " ")
	}
}

func (d *Daemon) notify(state string) {
	if d.opts.Notify == nil {
		return
	}
	if err := d.opts.Notify.Notify(state); err != nil {
		d.log.Warn("sd_notify failed", "error", err)
	}
}

// notifyStatusLocked sends STATUS= when it changed. d.mu is held; the
// notification is one datagram, which does not block.
func (d *Daemon) notifyStatusLocked() {
	s := d.statusLineLocked()
	if s == d.status {
		return
	}
	d.status = s
	d.notify("STATUS=" + s)
}

// saveLocked writes the records of the table when they changed. d.mu
// is held.
func (d *Daemon) saveLocked() {
	if d.opts.State == nil {
		return
	}
	recs := []Record{}
	for _, name := range sortedKeys(d.vols) {
		recs = append(recs, d.vols[name].record())
	}
	if reflect.DeepEqual(recs, d.saved) {
		return
	}
	if err := d.opts.State.Save(context.Background(), recs); err != nil {
		d.log.Error("state file not written", "error", err)
		return
	}
	d.saved = recs
}

func (v *volume) record() Record {
	r := Record{Name: v.cfg.Name, Kind: Kind(v.cfg.Type), Source: v.cfg.Source, Target: v.cfg.Target, State: v.state,
		Since: v.since, Retries: v.retries, Discovered: v.discovered}
	if v.state == StateMounted {
		m := v.mounted
		r.Since, r.WorkerPID, r.Device, r.KeyID, r.Provider = m.Since, m.WorkerPID, m.Device, m.KeyID, m.Provider
	}
	if v.lastErr != nil {
		r.LastError, r.ErrorKind = v.lastErr.Error(), ErrorKind(v.lastErr)
	}
	return r
}
