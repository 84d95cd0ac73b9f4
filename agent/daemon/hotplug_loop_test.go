package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/source"
	"kmsagent/agent/tstest"
	"kmsagent/agent/uevent"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/luks2"
)

// kmsImage writes an image whose LUKS2 header has UUID u and a kmsagent
// token (only the header matters to hot-plug).
func kmsImage(t *testing.T, u string) string {
	t.Helper()
	h, vk, err := luks2.Format(luks2.FormatOptions{UUID: u, DataOffset: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	vk.Wipe()
	if err := h.SetToken(0, []byte(`{"type":"kmsagent","keyslots":[]}`)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHotplugLoop runs the hot-plug loop on the kernel's own events:
// attaching a loop device with a configured volume's header mounts it,
// and one with an unnamed kmsagent header is opened as luks-<UUID>.
func TestHotplugLoop(t *testing.T) {
	tstest.NeedRoot(t, "to attach loop devices and listen to the kernel's device events")
	mounts := make(chan Spec, 16)
	svc := newFake()
	svc.onMount = func(s Spec) { mounts <- s }
	svc.results["data"] = []error{source.ErrNotFound}
	cfg := cfgWith(config.Volume{Name: "data", Type: "luks", Source: "UUID=" + uuidData, Target: "/mnt/data", Auto: true})
	cfg.Agent.AutoUnlockAttached = true
	d := New(cfg, Options{Service: svc, Devices: SystemDevices{Resolver: &source.Resolver{}}, Backoff: Backoff{Base: time.Hour}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The loop device gets its contents with a change event on the
	// kernel's group, which is there with or without udevd.
	ln, err := uevent.Listen(uevent.Options{Group: uevent.KernelGroup, Subsystem: "block"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	go d.Hotplug(ctx, ln)
	defer func() {
		cancel()
		<-runDone
	}()

	want := func(name, src string) {
		t.Helper()
		timeout := time.After(60 * time.Second) // a bound for a loaded machine, not a wait
		for {
			select {
			case s := <-mounts:
				if s.Name == name && s.Source == src {
					return
				}
			case <-timeout:
				t.Fatalf("no mount of %s (%s)", name, src)
			}
		}
	}
	want("data", "UUID="+uuidData) // the first attempt, without a disk
	for _, tc := range []struct{ uuid, name string }{{uuidData, "data"}, {uuidStray, discoveredPrefix + uuidStray}} {
		l, err := crypt.Attach(kmsImage(t, tc.uuid), true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Detach() })
		want(tc.name, "UUID="+tc.uuid)
	}
}
