package initramfs

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/config"
	"kmsagent/agent/tstest"
)

// hookFunctions is initramfs-tools' library that hooks source; the hook
// runs against it as mkinitramfs would run it, with a scratch DESTDIR.
const hookFunctions = "/usr/share/initramfs-tools/hook-functions"

const (
	hookScript = "../../packaging/initramfs/hook"
	keyScript  = "../../packaging/initramfs/keyscript"
	// secretMarker is the content of the AK/SK secret file; it must never
	// reach an initramfs.
	secretMarker = "SK-do-not-ship-4f1c9e"
)

func TestHook(t *testing.T) {
	if _, err := os.Stat(hookFunctions); err != nil {
		tstest.Unavailable(t, "%s is missing (apt-get install initramfs-tools-core)", hookFunctions)
	}
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "kms.sk")
	write(t, secretFile, secretMarker+"\n")
	ca := filepath.Join(dir, "ca.pem")
	write(t, ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")

	const ours = "root_crypt UUID=0b7a3c4e-1111-4222-8333-944455556666 none luks,keyscript=/usr/lib/kmsagent/keyscript,initramfs\n"
	metadata := `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = "http://10.0.2.2:8443"
project_id = "p1"
credentials = "metadata"
metadata_endpoint = "http://10.0.2.100"
ca_file = "` + ca + `"
[[kms.serve.client]]
access_key = "HOST1"
secret_key_file = "` + secretFile + `"
keys = ["*"]
`
	static := `
[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = "http://10.0.2.2:8443"
project_id = "p1"
access_key = "AK-HOST1"
secret_key_file = "` + secretFile + `"
`
	tests := []struct {
		name     string
		crypttab string
		config   string // "" for no file
		wantFail string // in stderr; "" for success
		wantCopy bool   // kmsagent goes into the initramfs
	}{
		{name: "metadata credentials", crypttab: ours, config: metadata, wantCopy: true},
		{name: "no line with our keyscript", crypttab: "data UUID=x none luks\n# " + ours, config: static},
		{name: "no crypttab", config: static},
		{name: "static AK/SK refused", crypttab: ours, config: static, wantFail: "kms.huaweicloud.credentials"},
		{name: "missing configuration", crypttab: ours, wantFail: "agent.toml: no such file"},
		{name: "embedded KMS refused", crypttab: ours, config: "[kms]\nprovider = \"local\"\n", wantFail: "embedded local KMS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			dest := filepath.Join(work, "initramfs")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			crypttab := filepath.Join(work, "crypttab")
			if tt.crypttab != "" {
				write(t, crypttab, tt.crypttab)
			}
			conf := filepath.Join(work, "agent.toml")
			if tt.config != "" {
				write(t, conf, tt.config)
			}
			binDir := filepath.Join(work, "bin")
			if err := os.Mkdir(binDir, 0o755); err != nil {
				t.Fatal(err)
			}
			// A copy, not a link: copy_exec would copy a link's target
			// under the target's name.
			data, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(binDir, "kmsagent"), data, 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sh", hookScript)
			cmd.Env = append(os.Environ(), "DESTDIR="+dest, "verbose=n", "MODULES=most",
				"PATH="+binDir+":"+os.Getenv("PATH"),
				"KMSAGENT_CRYPTTAB="+crypttab, "KMSAGENT_CONFIG="+conf, "KMSAGENT_KEYSCRIPT_SOURCE="+keyScript)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err = cmd.Run()
			if tt.wantFail != "" {
				if err == nil || !strings.Contains(stderr.String(), tt.wantFail) || !strings.Contains(stderr.String(), "E: kmsagent:") {
					t.Fatalf("hook: %v, stderr %q; want a failure naming %q", err, stderr.String(), tt.wantFail)
				}
			} else if err != nil {
				t.Fatalf("hook: %v\n%s", err, stderr.String())
			}
			files := listTree(t, dest)
			if !tt.wantCopy {
				if tt.wantFail == "" && len(files) != 0 {
					t.Fatalf("the hook copied %v without a crypttab line of ours", files)
				}
			} else {
				for _, want := range []string{"/usr/sbin/kmsagent", "/usr/lib/kmsagent/keyscript", "/etc/kmsagent/agent.toml", ca} {
					if _, ok := files[want]; !ok {
						t.Errorf("%s is not in the initramfs: %v", want, files)
					}
				}
				if fi, err := os.Stat(filepath.Join(dest, "usr/lib/kmsagent/keyscript")); err != nil || fi.Mode()&0o111 == 0 {
					t.Errorf("keyscript not executable: %v", err)
				}
				text, err := os.ReadFile(filepath.Join(dest, "etc/kmsagent/agent.toml"))
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := config.Parse(text)
				if err != nil || cfg.KMS.HuaweiCloud.Credentials != "metadata" || len(cfg.KMS.Serve.Clients) != 0 {
					t.Fatalf("initramfs configuration %v:\n%s", err, text)
				}
			}
			// Whatever happened, no secret is in the tree.
			for path := range files {
				data, err := os.ReadFile(filepath.Join(dest, path))
				if err == nil && (bytes.Contains(data, []byte(secretMarker)) || bytes.Contains(data, []byte(secretFile))) {
					t.Errorf("%s in the initramfs holds the secret or names its file", path)
				}
			}
		})
	}
}

// listTree returns the regular files under root, as absolute paths of
// the initramfs.
func listTree(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out[strings.TrimPrefix(p, root)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
