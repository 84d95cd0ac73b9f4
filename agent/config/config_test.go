package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const examplePath = "../../packaging/agent.toml.example"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string // substring; empty means success
		check   func(*testing.T, *Config)
	}{
		{name: "empty", doc: "", check: func(t *testing.T, c *Config) {
			if c.KMS.Provider != "local" || c.KMS.Local.StateDir != "/var/lib/kmsagent/kms" || c.KMS.Timeout.Std() != 10*time.Second {
				t.Errorf("defaults: %+v", c.KMS)
			}
		}},
		{name: "local", doc: "[kms]\ntimeout = \"3s\"\n[kms.local]\nstate_dir = \"/tmp/k\"\n", check: func(t *testing.T, c *Config) {
			if c.KMS.Local.StateDir != "/tmp/k" || c.KMS.Timeout.Std() != 3*time.Second {
				t.Errorf("got %+v", c.KMS)
			}
		}},
		{name: "huawei", doc: `[kms]
provider = "huaweicloud"
[kms.huaweicloud]
project_id = "p1"
region = "cn-north-4"
access_key = "AK"
secret_key_file = "/etc/kmsagent/sk"
`, check: func(t *testing.T, c *Config) {
			h := c.KMS.HuaweiCloud
			if h.ProjectID != "p1" || h.Credentials != "static" || h.AADField != "additional_authenticated_data" {
				t.Errorf("got %+v", h)
			}
		}},
		{name: "unknown-key", doc: "[kms]\nprovider = \"local\"\n\n[kms.local]\nstate_dri = \"/x\"\n", wantErr: ":5: unknown key kms.local.state_dri"},
		{name: "unknown-table", doc: "[kmss]\nx = 1\n", wantErr: "unknown key kmss"},
		{name: "wrong-type", doc: "[kms]\nprovider = 3\n", wantErr: ":2:"},
		{name: "bad-duration", doc: "[kms]\ntimeout = \"ten\"\n", wantErr: "not a duration"},
		{name: "negative-timeout", doc: "[kms]\ntimeout = \"-1s\"\n", wantErr: "kms.timeout = -1s is out of range"},
		{name: "syntax", doc: "[kms\n", wantErr: ":1:"},
		{name: "bad-provider", doc: "[kms]\nprovider = \"vault\"\n", wantErr: `kms.provider = "vault"`},
		{name: "huawei-no-project", doc: "[kms]\nprovider = \"huaweicloud\"\n", wantErr: "project_id is required"},
		{name: "huawei-static-no-ak", doc: "[kms]\nprovider = \"huaweicloud\"\n[kms.huaweicloud]\nproject_id = \"p\"\nregion = \"r\"\n", wantErr: "needs access_key and secret_key_file"},
		{name: "huawei-bad-creds", doc: "[kms]\nprovider = \"huaweicloud\"\n[kms.huaweicloud]\nproject_id = \"p\"\nregion = \"r\"\ncredentials = \"env\"\n", wantErr: `credentials = "env"`},
		{name: "huawei-bad-aad", doc: "[kms]\nprovider = \"huaweicloud\"\n[kms.huaweicloud]\nproject_id = \"p\"\nregion = \"r\"\ncredentials = \"metadata\"\naad_field = \"x\"\n", wantErr: `aad_field = "x"`},
		{name: "aws", doc: "[kms]\nprovider = \"aws\"\n[kms.aws]\nregion = \"eu-west-1\"\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_REGION", "")
			t.Setenv("AWS_DEFAULT_REGION", "")
			cfg, err := Parse([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("multi-line error: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.toml")
	if cfg, err := Load(missing, false); err != nil || cfg.KMS.Provider != "local" || cfg.Path != "" {
		t.Fatalf("implicit missing file: %v %+v", err, cfg)
	}
	if _, err := Load(missing, true); err == nil {
		t.Fatal("explicit missing file accepted")
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[kms]\nbogus = 1\n"), 0o644)
	_, err := Load(bad, true)
	if err == nil || !strings.HasPrefix(err.Error(), "config "+bad+":2: unknown key kms.bogus") {
		t.Fatalf("err = %v", err)
	}
	t.Setenv(EnvPath, "/x.toml")
	if p, explicit := Path(""); p != "/x.toml" || !explicit {
		t.Fatalf("env path: %s %v", p, explicit)
	}
	if p, _ := Path("/y.toml"); p != "/y.toml" {
		t.Fatal("flag does not win over env")
	}
}

// TestExampleDocumentsEveryKey keeps the example config complete: it must
// parse, equal the defaults, and mention every key the structs define.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data)
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("example values differ from the defaults:\n%+v\n%+v", cfg, Default())
	}
	for _, key := range tomlKeys(reflect.TypeOf(Config{}), "") {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(data), "\n"+leaf+" = ") {
			t.Errorf("example config does not document %s", key)
		}
	}
}

func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + tag
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(f.Type, name+".")...)
			continue
		}
		keys = append(keys, name)
	}
	return keys
}

func TestBareNumberTimeout(t *testing.T) {
	_, err := Parse([]byte("[kms]\ntimeout = 10\n"))
	if err == nil || !strings.Contains(err.Error(), "duration string") {
		t.Fatalf("timeout = 10 accepted or unclear: %v", err)
	}
}

// FuzzParse: any bytes give a config or an error naming a place, never a
// panic; an accepted config is valid.
func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("../../packaging/agent.toml.example")
	f.Add(b)
	f.Add([]byte("[kms]\nprovider = \"aws\"\n[kms.aws]\nregion = \"eu-west-1\"\n"))
	f.Add([]byte("[kms\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}
