package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/initramfs"
	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/kmsserver"
)

// TestInitramfsKey runs the keyscript's command as cryptsetup-initramfs
// does (CRYPTTAB_NAME, CRYPTTAB_SOURCE, stdout to cryptsetup) against kms
// serve's handler and a fake ECS metadata service on loopback: the
// passphrase it prints opens the volume, it notes the unlock for the
// daemon, and with the key disabled it names the key and, where the
// volume has a recovery keyslot, hands over to askpass, whose answer is
// what cryptsetup reads. With the KMS unreachable it keeps trying and
// asks for the recovery passphrase at the same time: a typed one wins, an
// answer from the KMS withdraws the prompt.
func TestInitramfsKey(t *testing.T) {
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	store, keyID := tstest.LocalKMS(t, "root")
	const ak, sk, project = "HOST1", "host1-secret", "p1"
	// Until downUntil (unix nanoseconds; -1 for ever) the KMS answers
	// 503, which the client takes as unreachable.
	var downUntil atomic.Int64
	kmsHandler := kmsserver.New(store, kmsserver.Options{
		Clients: []kmsserver.Client{{AccessKey: ak, SecretKey: []byte(sk), Keys: []string{kmsserver.AllKeys}}}, ProjectID: project})
	kms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := downUntil.Load(); d == -1 || time.Now().UnixNano() < d {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		kmsHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(kms.Close)
	var metadataCalls atomic.Int32
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openstack/latest/securitykey" {
			http.NotFound(w, r)
			return
		}
		metadataCalls.Add(1)
		fmt.Fprintf(w, `{"credential":{"access":%q,"secret":%q,"securitytoken":"tok","expires_at":%q}}`,
			ak, sk, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	t.Cleanup(md.Close)

	// The images are made as an image build would, with a static key.
	skFile := filepath.Join(dir, "sk")
	if err := os.WriteFile(skFile, []byte(sk), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := huaweicloud.New(t.Context(), huaweicloud.Config{Endpoint: kms.URL, ProjectID: project, AccessKey: ak, SecretKeyFile: skFile})
	if err != nil {
		t.Fatal(err)
	}
	image := func(name string, recovery []byte) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(17 << 20); err != nil {
			t.Fatal(err)
		}
		o := volume.FormatOptions{CreateOptions: volume.CreateOptions{KeyID: keyID, RecoveryPassphrase: recovery,
			RecoveryKDF: luks2.KDF{Type: luks2.KDFArgon2id, Time: 4, MemoryKiB: 1024, CPUs: 1}}}
		if _, err := volume.Format(context.Background(), f, client, o); err != nil {
			t.Fatal(err)
		}
		return path
	}
	plain := image("plain.img", nil)
	withRecovery := image("recovery.img", []byte("typed at the console"))

	conf := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = %q
project_id = %q
credentials = "metadata"
metadata_endpoint = %q
`, kms.URL, project, md.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	askpass := filepath.Join(dir, "askpass")
	writeAskpass := func(then string) {
		t.Helper()
		// A new file each time: the running binary of the last one may
		// still be open (ETXTBSY).
		os.Remove(askpass)
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho \"prompt: $1\" >&2\n"+then+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeAskpass("printf 'typed at the console'")
	records := filepath.Join(dir, "run")
	keyscript := func(source string) (stdout, stderr string, err error) {
		return keyscriptCtx(context.Background(), bin, conf, askpass, records, source)
	}

	out, errOut, err := keyscript(plain)
	if err != nil {
		t.Fatalf("initramfs key: %v\n%s", err, errOut)
	}
	opens := func(path, pass string) bool {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		vk, err := volume.OpenWithPassphrase(f, []byte(pass))
		if err != nil {
			return false
		}
		vk.Wipe()
		return true
	}
	if !opens(plain, out) {
		t.Fatalf("the printed passphrase (%d bytes) does not open the volume; stderr %q", len(out), errOut)
	}
	if metadataCalls.Load() == 0 {
		t.Error("the metadata service was not asked")
	}
	rec, err := initramfs.ReadRecord(records, "root_crypt")
	if err != nil || rec.KeyID != keyID || rec.Provider != "huaweicloud" || rec.Source != plain {
		t.Errorf("record %+v, %v", rec, err)
	}
	if raw, _ := json.Marshal(rec); bytes.Contains(raw, []byte(sk)) {
		t.Error("the record holds the secret")
	}

	if err := store.DisableKey(t.Context(), keyID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, source string
		wantOut      string
		wantExit     int
	}{
		{"disabled, no recovery keyslot", plain, "", exitKey},
		{"disabled, recovery keyslot", withRecovery, "typed at the console", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := keyscript(tt.source)
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantExit || out != tt.wantOut {
				t.Fatalf("exit %d, stdout %q; want %d, %q; stderr:\n%s", code, out, tt.wantExit, tt.wantOut, errOut)
			}
			if !strings.Contains(errOut, "the KMS refused key "+keyID) || !strings.Contains(errOut, "disabled") {
				t.Errorf("stderr does not name the disabled key:\n%s", errOut)
			}
			if tt.wantOut != "" && (!strings.Contains(errOut, "prompt: Recovery passphrase for root_crypt") || !opens(tt.source, out)) {
				t.Errorf("askpass was not asked, or its answer does not open the volume:\n%s", errOut)
			}
		})
	}

	// The KMS cannot be reached: the keyscript keeps trying and, where
	// the volume has a recovery keyslot, asks for it at the same time.
	if err := store.EnableKey(t.Context(), keyID); err != nil {
		t.Fatal(err)
	}
	t.Run("unreachable, passphrase typed", func(t *testing.T) {
		downUntil.Store(-1)
		t.Cleanup(func() { downUntil.Store(0) })
		writeAskpass("sleep 0.2; printf 'typed at the console'")
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, errOut, err := keyscriptCtx(ctx, bin, conf, askpass, records, withRecovery)
		if err != nil || out != "typed at the console" || !opens(withRecovery, out) {
			t.Fatalf("stdout %q, %v; want the typed passphrase; stderr:\n%s", out, err, errOut)
		}
		for _, want := range []string{"cannot reach the KMS for key " + keyID, "prompt: The KMS cannot be reached; still trying. Recovery passphrase for root_crypt (keyslot",
			"trying the recovery passphrase typed at the console"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut)
			}
		}
	})
	t.Run("unreachable, then the KMS answers", func(t *testing.T) {
		// Down for the first round only; the second comes 2 s later.
		downUntil.Store(time.Now().Add(time.Second).UnixNano())
		pidFile := filepath.Join(dir, "askpass.pid")
		writeAskpass("echo $$ > " + pidFile + "; exec sleep 60")
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, errOut, err := keyscriptCtx(ctx, bin, conf, askpass, records, withRecovery)
		if err != nil || !opens(withRecovery, out) || out == "typed at the console" {
			t.Fatalf("stdout %q, %v; want the KMS keyslot's passphrase; stderr:\n%s", out, err, errOut)
		}
		if !strings.Contains(errOut, "the KMS answered; recovery prompt withdrawn") {
			t.Errorf("stderr does not say the prompt was withdrawn:\n%s", errOut)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("took %s: the prompt held the keyscript up", took)
		}
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("askpass was not started: %v; stderr:\n%s", err, errOut)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		if pid <= 0 || syscall.Kill(pid, 0) == nil {
			t.Errorf("askpass (pid %d) still runs after the KMS answered", pid)
		}
		if rec, err := initramfs.ReadRecord(records, "root_crypt"); err != nil || rec.Source != withRecovery {
			t.Errorf("record %+v, %v; want the KMS unlock of %s noted", rec, err, withRecovery)
		}
	})
	t.Run("unreachable, no recovery keyslot", func(t *testing.T) {
		downUntil.Store(-1)
		t.Cleanup(func() { downUntil.Store(0) })
		marker := filepath.Join(dir, "asked")
		writeAskpass("touch " + marker)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		out, errOut, _ := keyscriptCtx(ctx, bin, conf, askpass, records, plain)
		if out != "" {
			t.Errorf("stdout %q while the KMS is down", out)
		}
		if !strings.Contains(errOut, "cannot reach the KMS for key "+keyID) {
			t.Errorf("stderr does not say the KMS cannot be reached:\n%s", errOut)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("askpass was asked for a volume without a recovery keyslot")
		}
	})
}

// keyscriptCtx runs the keyscript's command as cryptsetup-initramfs does:
// CRYPTTAB_NAME and CRYPTTAB_SOURCE set, stdout to cryptsetup.
func keyscriptCtx(ctx context.Context, bin, conf, askpass, records, source string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, "--config", conf, "initramfs", "key", "--askpass", askpass, "--record-dir", records)
	cmd.Env = append(os.Environ(), "CRYPTTAB_NAME=root_crypt", "CRYPTTAB_SOURCE="+source)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
