package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"kmsagent/agent/config"
	"kmsagent/kmsclient"
)

// fakeService mounts instantly unless told otherwise: results[name] is
// the queue of errors its next Mount calls return (then success), and
// block[name] makes Mount wait for the channel (or ctx).
type fakeService struct {
	mu       sync.Mutex
	results  map[string][]error
	block    map[string]chan struct{}
	mounted  map[string]Spec
	external []VolumeStatus // reported by Status besides what it mounted
	calls    map[string][]time.Time
	unmounts []string
	lazy     []bool          // of each unmount
	detached map[string]bool // mounted, but Status reports the disk gone
	onMount  func(Spec)      // told of every Mount call
	// unmountGate, when set, holds Unmount after the mount left the
	// table until it is closed: a lazy detach done, the mapping's
	// removal still running.
	unmountGate chan struct{}
	// afterStatus, when set, is called by Status once it has read what
	// is mounted, before it returns that: the window in which a mount
	// can finish that the answer misses.
	afterStatus func()
	pid         int
}

func newFake() *fakeService {
	return &fakeService{results: map[string][]error{}, block: map[string]chan struct{}{}, mounted: map[string]Spec{}, calls: map[string][]time.Time{}, detached: map[string]bool{}, pid: 1000}
}

func (f *fakeService) Mount(ctx context.Context, spec Spec) (Mounted, error) {
	f.mu.Lock()
	f.calls[spec.Name] = append(f.calls[spec.Name], time.Now())
	block, onMount := f.block[spec.Name], f.onMount
	f.mu.Unlock()
	if onMount != nil {
		onMount(spec)
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return Mounted{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.results[spec.Name]; len(q) > 0 {
		f.results[spec.Name] = q[1:]
		if q[0] != nil {
			return Mounted{}, fmt.Errorf("mount %s: %w", spec.Name, q[0])
		}
	}
	f.mounted[spec.Name] = spec
	if spec.Kind == KindLUKS {
		return Mounted{Spec: spec, Device: "/dev/mapper/" + spec.Name, KeyID: "cmk-1", Provider: "local", Since: time.Now()}, nil
	}
	f.pid++
	return Mounted{Spec: spec, WorkerPID: f.pid, KeyID: "cmk-1", Provider: "local", Since: time.Now()}, nil
}

func (f *fakeService) Unmount(ctx context.Context, target string, lazy bool) error {
	f.mu.Lock()
	f.unmounts = append(f.unmounts, target)
	f.lazy = append(f.lazy, lazy)
	gate := f.unmountGate
	for n, s := range f.mounted {
		if s.Target == target || s.Name == target {
			delete(f.mounted, n)
			f.mu.Unlock()
			if gate != nil {
				<-gate
			}
			return nil
		}
	}
	f.mu.Unlock()
	return fmt.Errorf("%s: not mounted", target)
}

func (f *fakeService) Status(ctx context.Context) ([]VolumeStatus, error) {
	f.mu.Lock()
	out := slices.Clone(f.external)
	for _, s := range f.mounted {
		state := ServiceMounted
		if f.detached[s.Name] {
			state = ServiceDetached
		}
		out = append(out, VolumeStatus{Name: s.Name, Kind: s.Kind, Source: s.Source, Target: s.Target, State: state, KeyID: "cmk-1", Provider: "local"})
	}
	after := f.afterStatus
	f.mu.Unlock()
	if after != nil {
		after()
	}
	return out, nil
}

func (f *fakeService) ncalls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls[name])
}

func (f *fakeService) callTimes(name string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[name])
}

func (f *fakeService) unmounted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.unmounts)
}

// fakeNotifier records sd_notify messages.
type fakeNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (n *fakeNotifier) Notify(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.msgs = append(n.msgs, s)
	return nil
}

func (n *fakeNotifier) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

func (n *fakeNotifier) count(prefix string) int {
	c := 0
	for _, m := range n.all() {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

func (n *fakeNotifier) lastStatus() string {
	msgs := n.all()
	for i := len(msgs) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(msgs[i], "STATUS="); ok {
			return s
		}
	}
	return ""
}

type fakeAudit struct {
	mu     sync.Mutex
	events []Event
}

func (a *fakeAudit) Audit(_ context.Context, e Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return nil
}

type fakeState struct {
	mu   sync.Mutex
	recs []Record
}

func (s *fakeState) Load(context.Context) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs), nil
}

func (s *fakeState) Save(_ context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = slices.Clone(recs)
	return nil
}

func vol(name string, auto bool) config.Volume {
	return config.Volume{Name: name, Type: "fuse", Source: "/cipher/" + name, Target: "/mnt/" + name, Auto: auto}
}

func cfgWith(vols ...config.Volume) *config.Config {
	c := config.Default()
	c.Volumes = vols
	return c
}

var (
	errThrottled = &kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrThrottled}
	errDown      = &kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrUnavailable}
	errDisabled  = &kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrKeyDisabled}
)

// fixedBackoff has no randomness: each delay is 3/4 of the nominal one.
var fixedBackoff = Backoff{Base: time.Second, Max: 8 * time.Second, Rand: func() float64 { return 0.5 }}
