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
	"strings"
	"sync/atomic"
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
// what cryptsetup reads.
func TestInitramfsKey(t *testing.T) {
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	store, keyID := tstest.LocalKMS(t, "root")
	const ak, sk, project = "HOST1", "host1-secret", "p1"
	kms := httptest.NewServer(kmsserver.New(store, kmsserver.Options{
		Clients: []kmsserver.Client{{AccessKey: ak, SecretKey: []byte(sk), Keys: []string{kmsserver.AllKeys}}}, ProjectID: project}))
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
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho \"prompt: $1\" >&2\nprintf 'typed at the console'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	records := filepath.Join(dir, "run")
	keyscript := func(source string) (stdout, stderr string, err error) {
		cmd := exec.Command(bin, "--config", conf, "initramfs", "key", "--askpass", askpass, "--record-dir", records)
		cmd.Env = append(os.Environ(), "CRYPTTAB_NAME=root_crypt", "CRYPTTAB_SOURCE="+source)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
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
}
