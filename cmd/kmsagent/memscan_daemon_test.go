package main

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/control"
	"kmsagent/agent/tstest"
)

// TestDaemonHoldsNoKey: the daemon, which lives long, never holds a
// share's keys; the worker it started does while the share is mounted
// (the positive control that the scan works), and after an unmount
// through the daemon the worker and its reaper are gone and no process
// of this test's (one naming its directory) holds any form of them.
func TestDaemonHoldsNoKey(t *testing.T) {
	h := newDaemonHost(t)
	cipher, plain := filepath.Join(h.dir, "cipher"), filepath.Join(h.dir, "plain")
	h.addVolumes(fmt.Sprintf("\n[[volume]]\nname = \"s\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n", cipher, plain))
	cli := h.cli
	cli("kms", "create-key", "--alias", "k")
	cli("format", "fuse", cipher, "--key-id", "k")
	os.Mkdir(plain, 0o755)
	t.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })
	master, err := hex.DecodeString(strings.TrimSpace(cli("export-key", cipher)))
	if err != nil {
		t.Fatal(err)
	}
	contentKey, err := hkdf.Key(sha256.New, master, nil, "AES-GCM file content encryption", 32)
	if err != nil {
		t.Fatal(err)
	}
	secrets := keyForms(master, "master key")
	roundKeys := aesRoundKeys(t, contentKey)

	cmd, notify := startDaemon(t, h.bin, h.cfg)
	notify.await(t, "READY=1")
	os.WriteFile(filepath.Join(plain, "f"), []byte("data"), 0o600) // the key is used
	worker := workerPID(t, cipher)

	found := 0
	wmem := readProcessMemory(t, worker)
	for _, rk := range roundKeys {
		if wmem.find(rk) != "" {
			found++
		}
	}
	if found == 0 {
		t.Fatal("positive control failed: no round key of the content key in the worker's memory; the scan cannot be trusted")
	}
	scan := func(when string, pid int, mem memory) {
		t.Helper()
		for name, form := range secrets {
			if at := mem.find(form); at != "" {
				t.Errorf("%s: process %d holds the %s, in %s", when, pid, name, at)
			}
		}
		for i, rk := range roundKeys {
			if at := mem.find(rk); at != "" {
				t.Errorf("%s: process %d holds round key %d of the content key, in %s", when, pid, i+2, at)
			}
		}
	}
	scan("while mounted, the daemon", cmd.Process.Pid, readProcessMemory(t, cmd.Process.Pid))
	reaper := reaperOf(t, worker)
	scan("while mounted, the reaper", reaper, readProcessMemory(t, reaper))

	c := control.NewClient(h.sock)
	defer c.Close()
	if err := c.Unmount(t.Context(), "s", false); err != nil {
		t.Fatal(err)
	}
	if !tstest.WaitExit(t, worker, 10*time.Second) {
		t.Fatalf("worker %d still running after the unmount", worker)
	}
	if !tstest.WaitExit(t, reaper, 10*time.Second) {
		t.Fatalf("reaper %d still running after its worker exited", reaper)
	}
	for p, mem := range otherProcessesMemory(t, ourProcesses(t, h.dir)) {
		scan("after unmount", p, mem)
	}
}
