package main

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
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
// through the daemon no process of ours holds any form of them.
func TestDaemonHoldsNoKey(t *testing.T) {
	tstest.NeedRoot(t, "to mount FUSE and read other processes' memory")
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	cipher, plain := filepath.Join(dir, "cipher"), filepath.Join(dir, "plain")
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\nstate_dir = %q\naudit_log = %q\n\n[[volume]]\nname = \"s\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n",
		filepath.Join(dir, "kms"), sock, filepath.Join(dir, "state"), filepath.Join(dir, "audit.log"), cipher, plain), 0o600)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--config", cfg}, args...)...).Output()
		if err != nil {
			t.Fatalf("kmsagent %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
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

	cmd, notify := startDaemon(t, bin, cfg)
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
	scan := func(when string, pid int) {
		t.Helper()
		mem := readProcessMemory(t, pid)
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
	scan("while mounted, the daemon", cmd.Process.Pid)

	c := control.NewClient(sock)
	defer c.Close()
	if err := c.Unmount(t.Context(), "s", false); err != nil {
		t.Fatal(err)
	}
	if !tstest.WaitExit(t, worker, 10*time.Second) {
		t.Fatalf("worker %d still running after the unmount", worker)
	}
	for _, p := range ourProcesses(t) {
		scan("after unmount", p)
	}
}
