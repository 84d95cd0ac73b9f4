package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/fuse/envelope"
)

// host is one machine's view: a config with its own embedded KMS.
type host struct {
	t      *testing.T
	bin    string
	config string
	dir    string
}

func newHost(t *testing.T) *host {
	tstest.NeedRoot(t, "to mount FUSE")
	dir := t.TempDir()
	// A control socket of its own, where no daemon answers: the
	// commands act directly even on a host where kmsagent run runs.
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n\n[agent]\nsocket = %q\n",
		filepath.Join(dir, "kms"), filepath.Join(dir, "no-daemon.sock")), 0o600)
	return &host{t: t, bin: tstest.Kmsagent(t), config: cfg, dir: dir}
}

// with returns h for use in subtest t.
func (h *host) with(t *testing.T) *host {
	c := *h
	c.t = t
	return &c
}

// kmsagent runs the binary; it returns stdout, stderr and the exit code.
func (h *host) kmsagent(stdin []byte, args ...string) (string, string, int) {
	h.t.Helper()
	cmd := exec.Command(h.bin, append([]string{"--config", h.config}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (h *host) must(args ...string) string {
	h.t.Helper()
	out, errs, code := h.kmsagent(nil, args...)
	if code != 0 {
		h.t.Fatalf("kmsagent %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// refuse runs a command that must fail with one line naming want.
func (h *host) refuse(want string, args ...string) {
	h.t.Helper()
	_, errs, code := h.kmsagent(nil, args...)
	if code == 0 || !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		h.t.Fatalf("kmsagent %s: exit %d, stderr %q; want a one-line error with %q", strings.Join(args, " "), code, errs, want)
	}
}

func (h *host) mount(cipher, plain string, opts ...string) {
	h.t.Helper()
	h.must(append([]string{"mount", "fuse", cipher, plain}, opts...)...)
	h.t.Cleanup(func() {
		if tstest.Mounted(h.t, plain) {
			h.kmsagent(nil, "umount", "--lazy", plain)
		}
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestShareLifecycle: format, mount in the background, write, refuse a
// second mount, unmount (the worker exits), remount and read back.
func TestShareLifecycle(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "shares")
	cipher, plain := filepath.Join(h.dir, "cipher"), filepath.Join(h.dir, "plain")
	os.Mkdir(cipher, 0o700)
	os.Mkdir(plain, 0o755)

	h.refuse("--key-id is required", "format", "fuse", cipher)
	h.refuse("not found", "format", "fuse", cipher, "--key-id", "nope")
	h.refuse("not a kmsagent share", "mount", "fuse", cipher, plain)
	out := h.must("format", "fuse", cipher, "--key-id", "shares")
	if !strings.Contains(out, "share ") {
		t.Fatalf("format printed %q", out)
	}
	h.refuse("--force", "format", "fuse", cipher, "--key-id", "shares")
	h.refuse("unknown option -o bogus", "mount", "fuse", cipher, plain, "-o", "bogus")
	h.refuse("inside the cipher directory", "mount", "fuse", cipher, filepath.Join(cipher))
	h.refuse("no such file", "mount", "fuse", cipher, filepath.Join(h.dir, "missing"))

	h.mount(cipher, plain)
	data := randomBytes(3<<20 + 17)
	if err := os.WriteFile(filepath.Join(plain, "data.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	h.refuse("already", "mount", "fuse", cipher, filepath.Join(h.dir))
	other := filepath.Join(h.dir, "plain2")
	os.Mkdir(other, 0o755)
	h.refuse("already mounted on this host", "mount", "fuse", cipher, other)
	if st := h.must("status"); !strings.Contains(st, plain) || !strings.Contains(st, "running") {
		t.Fatalf("status: %s", st)
	}

	h.must("umount", plain)
	if tstest.Mounted(t, plain) {
		t.Fatal("still mounted after umount")
	}
	if out, _ := exec.Command("pgrep", "-f", "fuse-worker -o  -- "+cipher).Output(); len(out) > 0 {
		t.Fatalf("worker still running: %s", out)
	}
	h.refuse("not a kmsagent mount", "umount", plain)

	// Re-wrap under a new key: the data stays readable, the old key is
	// no longer needed.
	newKey := strings.TrimSpace(h.must("kms", "create-key"))
	h.refuse("--key-id is required", "rewrap", cipher)
	h.must("rewrap", cipher, "--key-id", newKey)
	h.must("kms", "disable-key", "shares")

	h.mount(cipher, plain, "-o", "ro")
	got, err := os.ReadFile(filepath.Join(plain, "data.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back after remount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(plain, "new"), nil, 0o600); err == nil {
		t.Fatal("wrote to a read-only mount")
	}
	h.must("umount", plain)
}

// TestGocryptfsInterop: a tree written through our mount reads back with
// gocryptfs -masterkey (export-key), and a gocryptfs tree is adopted with
// --import-master-key-file and reads back through ours.
func TestGocryptfsInterop(t *testing.T) {
	h := newHost(t)
	tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	h.must("kms", "create-key", "--alias", "k")
	files := map[string][]byte{
		"empty":                  nil,
		"one":                    {1},
		"dir/4095":               randomBytes(4095),
		"dir/4096":               randomBytes(4096),
		"dir/4097":               randomBytes(4097),
		"dir/sub/big":            randomBytes(2<<20 + 3),
		strings.Repeat("L", 240): randomBytes(100),
	}
	write := func(root string) {
		for name, data := range files {
			p := filepath.Join(root, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, data, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("dir/4096", filepath.Join(root, "link")); err != nil {
			t.Fatal(err)
		}
	}
	check := func(root string) {
		t.Helper()
		for name, data := range files {
			got, err := os.ReadFile(filepath.Join(root, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %v (got %d bytes, want %d)", name, err, len(got), len(data))
			}
		}
		if target, err := os.Readlink(filepath.Join(root, "link")); err != nil || target != "dir/4096" {
			t.Fatalf("symlink: %q %v", target, err)
		}
	}
	gocryptfs := func(cipher, plain string, stdin []byte, args ...string) {
		t.Helper()
		cmd := exec.Command("gocryptfs", append(append([]string{"-q"}, args...), cipher, plain)...)
		cmd.Stdin = bytes.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gocryptfs %v: %v\n%s", args, err, out)
		}
		t.Cleanup(func() { exec.Command("fusermount3", "-u", "-z", plain).Run() })
	}

	t.Run("ours to gocryptfs", func(t *testing.T) {
		h := h.with(t)
		cipher, plain, gplain := filepath.Join(h.dir, "c1"), filepath.Join(h.dir, "p1"), filepath.Join(h.dir, "g1")
		for _, d := range []string{cipher, plain, gplain} {
			os.Mkdir(d, 0o755)
		}
		h.must("format", "fuse", cipher, "--key-id", "k")
		h.mount(cipher, plain)
		write(plain)
		h.must("umount", plain)
		key, warn, code := h.kmsagent(nil, "export-key", cipher)
		if code != 0 || !strings.Contains(warn, "WARNING") || len(strings.TrimSpace(key)) != 64 {
			t.Fatalf("export-key: %d %q", code, warn)
		}
		gocryptfs(cipher, gplain, []byte(key), "-masterkey=stdin")
		check(gplain)
		exec.Command("fusermount3", "-u", gplain).Run()
	})

	t.Run("gocryptfs to ours", func(t *testing.T) {
		h := h.with(t)
		cipher, plain, gplain := filepath.Join(h.dir, "c2"), filepath.Join(h.dir, "p2"), filepath.Join(h.dir, "g2")
		for _, d := range []string{cipher, plain, gplain} {
			os.Mkdir(d, 0o755)
		}
		pw := writeFile(t, filepath.Join(h.dir, "pw"), "correct horse\n", 0o600)
		cmd := exec.Command("gocryptfs", "-init", "-passfile", pw, cipher)
		initOut, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gocryptfs -init: %v\n%s", err, initOut)
		}
		xray := exec.Command("gocryptfs-xray", "-dumpmasterkey", filepath.Join(cipher, "gocryptfs.conf"))
		xray.Stdin = strings.NewReader("correct horse\n")
		xout, err := xray.CombinedOutput()
		m := regexp.MustCompile(`[0-9a-f]{64}|([0-9a-f]{8}-){7}[0-9a-f]{8}`).Find(xout)
		if err != nil || m == nil {
			t.Fatalf("gocryptfs-xray -dumpmasterkey: %v\n%s", err, xout)
		}
		// Nothing encrypted yet: no key can be checked against the tree.
		wrong := writeFile(t, filepath.Join(h.dir, "wrong"), strings.Repeat("ab", 32), 0o600)
		h.refuse("pass --force", "format", "fuse", cipher, "--key-id", "k", "--import-master-key-file", wrong)
		gocryptfs(cipher, gplain, nil, "-passfile", pw)
		write(gplain)
		exec.Command("fusermount3", "-u", gplain).Run()

		h.refuse("wrong master key", "format", "fuse", cipher, "--key-id", "k", "--import-master-key-file", wrong)
		if _, err := os.Stat(filepath.Join(cipher, envelope.FileName)); err == nil {
			t.Fatal("an envelope was written for a wrong key")
		}
		open := writeFile(t, filepath.Join(h.dir, "open"), string(m), 0o644)
		h.refuse("chmod 600", "format", "fuse", cipher, "--key-id", "k", "--import-master-key-file", open)
		mk := writeFile(t, filepath.Join(h.dir, "mk"), string(m)+"\n", 0o600)
		h.must("format", "fuse", cipher, "--key-id", "k", "--import-master-key-file", mk)
		h.mount(cipher, plain)
		check(plain)
		h.must("umount", plain)
	})
}

func TestExportKeyNeedsRoot(t *testing.T) {
	h := newHost(t)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", h.bin, "export-key", h.dir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "root only") {
		t.Fatalf("export-key as nobody: %v %s", err, out)
	}
}
