package huaweicloud

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	valid := Config{ProjectID: testProject, Region: testRegion, AccessKey: testAK, SecretKeyFile: "/nonexistent/sk"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // substring; empty means valid
	}{
		{"valid static", func(*Config) {}, ""},
		{"missing project", func(c *Config) { c.ProjectID = "" }, "project_id is required"},
		{"project with slash", func(c *Config) { c.ProjectID = "a/b" }, "is not a project id"},
		{"project with percent", func(c *Config) { c.ProjectID = "a%2Fb" }, "is not a project id"},
		{"project with semicolon", func(c *Config) { c.ProjectID = "a;b" }, "is not a project id"},
		{"project with space", func(c *Config) { c.ProjectID = "a b" }, "is not a project id"},
		{"no endpoint nor region", func(c *Config) { c.Region = "" }, "set endpoint or region"},
		{"endpoint without scheme", func(c *Config) { c.Endpoint = "kms.xx-test-1.myhuaweicloud.com" }, "is not an http(s) URL"},
		{"endpoint ftp", func(c *Config) { c.Endpoint = "ftp://kms.example.com" }, "is not an http(s) URL"},
		{"endpoint with query", func(c *Config) { c.Endpoint = "https://kms.example.com/?x=1" }, "is not an http(s) URL"},
		{"endpoint with fragment", func(c *Config) { c.Endpoint = "https://kms.example.com/#x" }, "is not an http(s) URL"},
		{"endpoint no host", func(c *Config) { c.Endpoint = "https:///v1.0" }, "is not an http(s) URL"},
		{"endpoint unparsable", func(c *Config) { c.Endpoint = "https://kms example.com" }, "is not an http(s) URL"},
		{"region unparsable", func(c *Config) { c.Region = "xx test" }, "has no known KMS endpoint; set endpoint"},
		{"region unknown", func(c *Config) { c.Region = "xx-test-1" }, "has no known KMS endpoint; set endpoint"},
		{"bad credentials mode", func(c *Config) { c.Credentials = "env" }, `credentials "env", want "static" or "metadata"`},
		{"static without AK", func(c *Config) { c.AccessKey = "" }, "need access_key and secret_key_file"},
		{"static without SK file", func(c *Config) { c.SecretKeyFile = "" }, "need access_key and secret_key_file"},
		{"metadata without AK", func(c *Config) { c.Credentials = CredentialsMetadata; c.AccessKey, c.SecretKeyFile = "", "" }, ""},
		{"bad metadata endpoint", func(c *Config) { c.Credentials = CredentialsMetadata; c.MetadataEndpoint = "169.254.169.254" }, "metadata endpoint"},
		{"aad_field additional", func(c *Config) { c.AADField = AADFieldAdditional }, ""},
		{"aad_field context", func(c *Config) { c.AADField = AADFieldContext }, ""},
		{"aad_field other", func(c *Config) { c.AADField = "aad" }, `aad_field "aad"`},
		{"aad_field wrong case", func(c *Config) { c.AADField = "Encryption_Context" }, `aad_field "Encryption_Context"`},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "negative timeout"},
		{"http to loopback", func(c *Config) { c.Endpoint = "http://127.0.0.1:8443" }, ""},
		{"http to localhost", func(c *Config) { c.Endpoint = "http://localhost:8443" }, ""},
		{"http to IPv6 loopback", func(c *Config) { c.Endpoint = "http://[::1]:8443" }, ""},
		{"http off the host", func(c *Config) { c.Endpoint = "http://10.0.0.5:8443" }, "clear text"},
		{"http by name", func(c *Config) { c.Endpoint = "http://kms.example.com" }, "clear text"},
		{"unix socket", func(c *Config) { c.Endpoint = "unix:///run/kmsagent/kms.sock" }, ""},
		{"unix relative", func(c *Config) { c.Endpoint = "unix://run/kms.sock" }, "not a unix socket URL"},
		{"unix with TLS", func(c *Config) { c.Endpoint = "unix:///run/kms.sock"; c.CAFile = "/ca.pem" }, "uses no TLS"},
		{"cert without key", func(c *Config) { c.CertFile = "/c.pem" }, "cert_file and key_file go together"},
		{"key without cert", func(c *Config) { c.KeyFile = "/k.pem" }, "cert_file and key_file go together"},
		{"TLS files and a client", func(c *Config) { c.CAFile = "/ca.pem"; c.HTTPClient = &http.Client{} }, "on the HTTP client given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.edit(&cfg)
			_, _, err := cfg.check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("check: got %v, want an error containing %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "huaweicloud kms: ") {
				t.Errorf("error %q does not name the provider", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, base, err := Config{ProjectID: testProject, Region: testRegion, Credentials: CredentialsMetadata}.check()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := base.String(), "https://kms."+testRegion+".myhuaweicloud.com"; got != want {
		t.Errorf("endpoint %s, want %s", got, want)
	}
	if cfg.AADField != AADFieldAdditional || cfg.Timeout != DefaultTimeout || cfg.MetadataEndpoint != DefaultMetadataEndpoint {
		t.Errorf("defaults: aad_field %q, timeout %v, metadata %q", cfg.AADField, cfg.Timeout, cfg.MetadataEndpoint)
	}
	cfg, base, err = Config{ProjectID: testProject, Endpoint: "http://127.0.0.1:1/kms/", AccessKey: "a", SecretKeyFile: "f", MetadataEndpoint: "http://127.0.0.1:2/"}.check()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Credentials != CredentialsStatic || base.String() != "http://127.0.0.1:1/kms" || cfg.MetadataEndpoint != "http://127.0.0.1:2" {
		t.Errorf("credentials %q, endpoint %s, metadata %s", cfg.Credentials, base, cfg.MetadataEndpoint)
	}
}

func TestSecretKeyFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		wantErr []string // substrings; nil means the SK loads
	}{
		{"ok with newline", func(t *testing.T) string { return writeSK(t, testSK+"\n", 0o600) }, nil},
		{"ok with CRLF and blanks around", func(t *testing.T) string { return writeSK(t, "  "+testSK+"\r\n", 0o400) }, nil},
		{"missing", func(t *testing.T) string { return filepath.Join(dir, "nope") }, []string{"secret file", "no such file"}},
		{"mode 0644", func(t *testing.T) string { return writeSK(t, testSK, 0o644) }, []string{"readable by group or others", "mode 0644", "chmod 600"}},
		{"mode 0640", func(t *testing.T) string { return writeSK(t, testSK, 0o640) }, []string{"mode 0640", "chmod 600"}},
		{"mode 0604", func(t *testing.T) string { return writeSK(t, testSK, 0o604) }, []string{"mode 0604", "chmod 600"}},
		{"empty", func(t *testing.T) string { return writeSK(t, "", 0o600) }, []string{"is empty"}},
		{"blank", func(t *testing.T) string { return writeSK(t, " \n\n", 0o600) }, []string{"is empty"}},
		{"two lines", func(t *testing.T) string { return writeSK(t, testSK+"\nsecond\n", 0o600) }, []string{"more than one line"}},
		{"AK and SK on one line", func(t *testing.T) string { return writeSK(t, testAK+" "+testSK, 0o600) }, []string{"blanks inside"}},
		{"too large", func(t *testing.T) string { return writeSK(t, strings.Repeat("x", maxSecretKeyFile+1), 0o600) }, []string{"larger than"}},
		{"directory", func(t *testing.T) string { return t.TempDir() }, []string{"not a regular file"}},
		{"fifo", func(t *testing.T) string { return fifo }, []string{"not a regular file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			c, err := New(context.Background(), Config{Endpoint: "http://127.0.0.1:1", ProjectID: testProject, AccessKey: testAK, SecretKeyFile: path})
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				cred, _ := c.creds.credentials(context.Background())
				if string(cred.creds.SecretKey) != testSK || cred.creds.AccessKey != testAK || cred.creds.SecurityToken != "" {
					t.Fatalf("loaded credentials %q / %d-byte SK", cred.creds.AccessKey, len(cred.creds.SecretKey))
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted the secret key file")
			}
			msg := err.Error()
			for _, w := range tc.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, testSK) {
				t.Errorf("error quotes the SK: %q", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestNewCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(ctx, Config{ProjectID: testProject, Region: testRegion, Credentials: CredentialsMetadata})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestNewMetadataDoesNotFetch(t *testing.T) {
	// A daemon may start before the metadata service answers.
	c, err := New(context.Background(), Config{ProjectID: testProject, Region: testRegion, Credentials: CredentialsMetadata, MetadataEndpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Provider() != "huaweicloud" {
		t.Fatalf("provider %q", c.Provider())
	}
}

func TestHTTPClients(t *testing.T) {
	c, err := Config{}.httpClient()
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.Transport.(*http.Transport)
	if !ok || c.CheckRedirect == nil || tr.MaxIdleConnsPerHost < 64 {
		t.Fatalf("default client: transport %T, redirect check %v", c.Transport, c.CheckRedirect != nil)
	}
	if tr == http.DefaultTransport {
		t.Fatal("the default client shares http.DefaultTransport")
	}
	m := metadataHTTPClient()
	if tr, ok := m.Transport.(*http.Transport); !ok || tr.Proxy != nil || m.CheckRedirect == nil {
		t.Fatal("metadata client goes through a proxy or follows redirects")
	}
}
