package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
)

// testHost is a configuration with its own embedded KMS and the kmsagent
// binary, which Mount starts as the worker.
type testHost struct {
	bin, config, runDir string
	svc                 *Service
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	tstest.NeedRoot(t, "to mount FUSE")
	dir := t.TempDir()
	bin := tstest.Kmsagent(t)
	cfgPath := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, "[kms.local]\nstate_dir = %q\n", filepath.Join(dir, "kms")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	// A run directory of its own: the workers must be told it.
	runDir := filepath.Join(dir, "run")
	svc, err := New(Options{Config: cfg, Executable: bin, RunDir: runDir})
	if err != nil {
		t.Fatal(err)
	}
	return &testHost{bin: bin, config: cfgPath, runDir: runDir, svc: svc}
}

// kms runs a kmsagent kms command against the host's KMS.
func (h *testHost) kms(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(h.bin, append([]string{"--config", h.config, "kms"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kmsagent kms %v: %v\n%s", args, err, out)
	}
}

// TestShareLifecycle drives a share through the service as the daemon
// does: format, mount (a worker child serves it), status, unmount (the
// worker exits), and a mount the KMS refuses, whose error is the KMS's.
func TestShareLifecycle(t *testing.T) {
	h := newTestHost(t)
	ctx := context.Background()
	h.kms(t, "create-key", "--alias", "k")
	base := t.TempDir()
	cipher, plain := filepath.Join(base, "c"), filepath.Join(base, "p")
	os.Mkdir(cipher, 0o700)
	os.Mkdir(plain, 0o755)
	f, err := h.svc.Format(ctx, FormatOptions{Kind: KindShare, Source: cipher, KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if k, err := Probe(cipher); k != KindShare || err != nil {
		t.Fatalf("Probe of a formatted share: %q, %v", k, err)
	}

	m, err := h.svc.Mount(ctx, Spec{Name: "s", Source: cipher, Target: plain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.svc.Unmount(context.Background(), plain, true) })
	if m.Kind != KindShare || m.WorkerPID == 0 || m.UUID != f.UUID || m.KeyID != f.KeyID || m.Exited == nil {
		t.Fatalf("Mounted = %+v", m)
	}
	if locks, _ := filepath.Glob(filepath.Join(h.runDir, "*.lock")); len(locks) != 1 {
		t.Fatalf("locks in the service's run directory: %q; want the worker's", locks)
	}
	if err := os.WriteFile(filepath.Join(plain, "hello"), []byte("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := h.svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range st {
		if v.Target == plain {
			found = true
			if v.Kind != KindShare || v.State != StateMounted || v.WorkerPID != m.WorkerPID || v.Source != cipher || v.UUID != f.UUID {
				t.Fatalf("Status = %+v; mounted %+v", v, m)
			}
		}
	}
	if !found {
		t.Fatalf("Status does not list %s: %+v", plain, st)
	}

	if err := h.svc.Unmount(ctx, plain, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Exited:
	case <-time.After(30 * time.Second):
		t.Fatal("worker still running after Unmount")
	}
	var nm *NotMountedError
	if err := h.svc.Unmount(ctx, plain, false); !errors.As(err, &nm) {
		t.Fatalf("second Unmount: %v; want a NotMountedError", err)
	}

	h.kms(t, "disable-key", "k")
	if _, err := h.svc.Mount(ctx, Spec{Source: cipher, Target: plain}); !errors.Is(err, kmsclient.ErrKeyDisabled) {
		t.Fatalf("Mount with the key disabled: %v; want kmsclient.ErrKeyDisabled", err)
	}
}
