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
		{name: "huawei-tls", doc: "[kms]\nprovider = \"huaweicloud\"\n[kms.huaweicloud]\nproject_id = \"p\"\nendpoint = \"https://kms.lab:8443\"\ncredentials = \"metadata\"\nca_file = \"/etc/kmsagent/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n", check: func(t *testing.T, c *Config) {
			if h := c.KMS.HuaweiCloud; h.CAFile != "/etc/kmsagent/ca.pem" || h.CertFile != "/c.pem" || h.KeyFile != "/k.pem" {
				t.Errorf("got %+v", h)
			}
		}},
		{name: "serve", doc: serveDoc, check: func(t *testing.T, c *Config) {
			s := c.KMS.Serve
			want := []ServeClient{
				{AccessKey: "HOST1", SecretKeyFile: "/etc/kmsagent/serve/host1.sk", Keys: []string{"host1-disks", "3f1b6c9e-0000-4000-8000-000000000000"}},
				{AccessKey: "HOST2", SecretKeyFile: "/etc/kmsagent/serve/host2.sk", Keys: []string{"host2-disks"}},
			}
			if s.Listen != "0.0.0.0:8443" || s.TLSCert != "/c.pem" || s.Socket != DefaultServeSocket || s.MaxConnections != 256 ||
				s.ReadHeaderTimeout.Std() != 2*time.Second || !reflect.DeepEqual(s.Clients, want) {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "serve-unknown-client-key", doc: "[[kms.serve.client]]\naccess_key = \"A\"\nsecret_key_file = \"/s\"\nkeys = [\"k\"]\nkey = \"x\"\n", wantErr: "unknown key kms.serve.client.key"},
		{name: "serve-no-keys", doc: "[[kms.serve.client]]\naccess_key = \"A\"\nsecret_key_file = \"/s\"\n", wantErr: "keys is empty"},
		{name: "serve-empty-key", doc: "[[kms.serve.client]]\naccess_key = \"A\"\nsecret_key_file = \"/s\"\nkeys = [\"\"]\n", wantErr: "empty name"},
		{name: "serve-no-sk", doc: "[[kms.serve.client]]\naccess_key = \"A\"\nkeys = [\"k\"]\n", wantErr: "access_key and secret_key_file are required"},
		{name: "serve-duplicate-ak", doc: "[[kms.serve.client]]\naccess_key = \"A\"\nsecret_key_file = \"/s\"\nkeys = [\"k\"]\n[[kms.serve.client]]\naccess_key = \"A\"\nsecret_key_file = \"/t\"\nkeys = [\"k\"]\n", wantErr: "listed twice"},
		{name: "serve-cert-no-key", doc: "[kms.serve]\ntls_cert = \"/c.pem\"\n", wantErr: "tls_cert and tls_key go together"},
		{name: "serve-ca-no-cert", doc: "[kms.serve]\nclient_ca = \"/ca.pem\"\n", wantErr: "client_ca needs tls_cert"},
		{name: "serve-no-conns", doc: "[kms.serve]\nmax_connections = 0\n", wantErr: "max_connections = 0"},
		{name: "serve-no-rate", doc: "[kms.serve]\nrequests_per_second = 0.0\n", wantErr: "requests_per_second"},
		{name: "serve-bad-timeout", doc: "[kms.serve]\nidle_timeout = \"0s\"\n", wantErr: "kms.serve.idle_timeout"},
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

const serveDoc = `[kms.serve]
listen = "0.0.0.0:8443"
tls_cert = "/c.pem"
tls_key = "/k.pem"
read_header_timeout = "2s"

[[kms.serve.client]]
access_key = "HOST1"
secret_key_file = "/etc/kmsagent/serve/host1.sk"
keys = ["host1-disks", "3f1b6c9e-0000-4000-8000-000000000000"]

[[kms.serve.client]]
access_key = "HOST2"
secret_key_file = "/etc/kmsagent/serve/host2.sk"
keys = ["host2-disks"]
`

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
		// Keys of arrays of tables have no default entry: the example
		// shows them commented out.
		if !strings.Contains(string(data), "\n"+leaf+" = ") && !strings.Contains(string(data), "\n# "+leaf+" = ") {
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
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(f.Type.Elem(), name+".")...)
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
	f.Add([]byte(serveDoc))
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
