package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// TestMountKeyRefused: a share whose KMS key is refused fails to mount
// with the key-refused exit status, although the refusal happened in the
// worker and reached the command only as a message on its pipe.
func TestMountKeyRefused(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	h.must("kms", "disable-key", "k")
	_, errs, code := h.kmsagent(nil, "mount", "fuse", cipher, plain)
	if code != exitKey || !strings.Contains(errs, "disabled") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("mount with a disabled key: exit %d, stderr %q; want exit %d and one line saying the key is disabled", code, errs, exitKey)
	}
	if tstest.Mounted(t, plain) {
		t.Fatal("mounted with a disabled key")
	}
}

// TestMountRelativeConfig: a relative --config reaches the share worker,
// which starts in /, as the same file.
func TestMountRelativeConfig(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	cmd := exec.Command(h.bin, "--config", filepath.Base(h.config), "mount", "fuse", cipher, plain)
	cmd.Dir = filepath.Dir(h.config)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount with --config %s: %v\n%s", filepath.Base(h.config), err, out)
	}
	defer h.must("umount", plain)
	if !tstest.Mounted(t, plain) {
		t.Fatal("not mounted")
	}
}
