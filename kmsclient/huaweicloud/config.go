package huaweicloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"kmsagent/agent/secret"
)

// Credential sources.
const (
	CredentialsStatic   = "static"
	CredentialsMetadata = "metadata"
)

// Where the binding goes in requests.
const (
	AADFieldAdditional = "additional_authenticated_data"
	AADFieldContext    = "encryption_context"
)

// Defaults.
const (
	DefaultMetadataEndpoint = "http://169.254.169.254"
	DefaultTimeout          = 10 * time.Second
)

// Config configures a Client.
type Config struct {
	// Endpoint is e.g. https://kms.<region>.myhuaweicloud.com, derived
	// from Region (regions.go) when empty; unix:///path for kms serve on this host.
	// Plain http is accepted only to a loopback address.
	Endpoint         string
	ProjectID        string        // required
	Region           string        // reported by DescribeKey; names the default endpoint
	Credentials      string        // "static" (default) or "metadata"
	AccessKey        string        // static
	SecretKeyFile    string        // static: file holding the SK, mode 0600 or stricter
	MetadataEndpoint string        // default http://169.254.169.254
	AADField         string        // "additional_authenticated_data" (default) or "encryption_context"
	Timeout          time.Duration // per request, default 10s
	// CAFile holds the PEM CAs that sign the endpoint's certificate,
	// trusted instead of the system roots; CertFile and KeyFile are a
	// client certificate for endpoints that require one (mTLS).
	CAFile, CertFile, KeyFile string
	HTTPClient                *http.Client // optional, tests; also used for the metadata service; its redirects are never followed

	socketPath string // from a unix:// endpoint
}

// unixHost is the host of requests sent over a unix socket; it is signed
// like any host, and the server takes it from the request as sent.
const unixHost = "localhost"

// check fills in defaults and validates c.
func (c Config) check() (Config, *url.URL, error) {
	if c.ProjectID == "" {
		return c, nil, errors.New("huaweicloud kms: project_id is required")
	}
	if !validProjectID(c.ProjectID) {
		return c, nil, fmt.Errorf("huaweicloud kms: project_id %q is not a project id (letters, digits, '-', '_')", c.ProjectID)
	}
	if c.Endpoint == "" {
		if c.Region == "" {
			return c, nil, errors.New("huaweicloud kms: set endpoint or region")
		}
		ep, err := regionEndpoint(c.Region)
		if err != nil {
			return c, nil, err
		}
		c.Endpoint = ep
	}
	base, err := c.endpointURL()
	if err != nil {
		return c, nil, err
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, nil, errors.New("huaweicloud kms: cert_file and key_file go together")
	}
	if c.socketPath != "" && (c.CAFile != "" || c.CertFile != "") {
		return c, nil, errors.New("huaweicloud kms: a unix:// endpoint uses no TLS; drop ca_file, cert_file and key_file")
	}
	if c.HTTPClient != nil && (c.CAFile != "" || c.CertFile != "" || c.socketPath != "") {
		return c, nil, errors.New("huaweicloud kms: set TLS files and unix endpoints on the HTTP client given, not in the config")
	}
	switch c.Credentials {
	case "":
		c.Credentials = CredentialsStatic
	case CredentialsStatic, CredentialsMetadata:
	default:
		return c, nil, fmt.Errorf("huaweicloud kms: credentials %q, want %q or %q", c.Credentials, CredentialsStatic, CredentialsMetadata)
	}
	if c.Credentials == CredentialsStatic && (c.AccessKey == "" || c.SecretKeyFile == "") {
		return c, nil, errors.New("huaweicloud kms: static credentials need access_key and secret_key_file")
	}
	if c.MetadataEndpoint == "" {
		c.MetadataEndpoint = DefaultMetadataEndpoint
	}
	if u, err := url.Parse(c.MetadataEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, nil, fmt.Errorf("huaweicloud kms: metadata endpoint %q is not an http(s) URL", c.MetadataEndpoint)
	}
	c.MetadataEndpoint = strings.TrimSuffix(c.MetadataEndpoint, "/")
	switch c.AADField {
	case "":
		c.AADField = AADFieldAdditional
	case AADFieldAdditional, AADFieldContext:
	default:
		return c, nil, fmt.Errorf("huaweicloud kms: aad_field %q, want %q or %q", c.AADField, AADFieldAdditional, AADFieldContext)
	}
	if c.Timeout < 0 {
		return c, nil, fmt.Errorf("huaweicloud kms: negative timeout %v", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c, base, nil
}

// endpointURL parses c.Endpoint; for unix:///path it records the path and
// returns an http URL to send over it.
func (c *Config) endpointURL() (*url.URL, error) {
	base, err := url.Parse(strings.TrimSuffix(c.Endpoint, "/"))
	if err == nil && base.Scheme == "unix" {
		if base.Host != "" || !strings.HasPrefix(base.Path, "/") || base.RawQuery != "" || base.Fragment != "" {
			return nil, fmt.Errorf("huaweicloud kms: endpoint %q is not a unix socket URL such as unix:///run/kmsagent/kms.sock", c.Endpoint)
		}
		c.socketPath = base.Path
		return &url.URL{Scheme: "http", Host: unixHost}, nil
	}
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("huaweicloud kms: endpoint %q is not an http(s) URL such as https://kms.<region>.myhuaweicloud.com", c.Endpoint)
	}
	if base.Scheme == "http" && !isLoopback(base.Hostname()) {
		return nil, fmt.Errorf("huaweicloud kms: endpoint %q would send keys and signatures in clear text; use https, or unix:// for a KMS on this host", c.Endpoint)
	}
	return base, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validProjectID accepts what IAM hands out (32 hex digits) and similar
// names, and nothing that would need escaping in the request path, where
// client and server could then disagree on what was signed.
func validProjectID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// maxSecretKeyFile bounds the SK file; a Huawei SK is 40 characters.
const maxSecretKeyFile = 4096

// readSecretKeyFile loads the SK into locked memory. The file must be a
// regular file nobody but its owner can read: the SK signs for the
// account's KMS keys.
func readSecretKeyFile(path string) (*secret.Key, error) {
	k, err := secret.ReadTokenFile(path, maxSecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("huaweicloud kms: %w", err)
	}
	return k, nil
}

// httpClient returns the client for KMS requests: cfg.HTTPClient, or one
// with the TLS files and unix socket of cfg. It does not follow
// redirects: a signed request, and any key material in it, goes to the
// configured endpoint or nowhere. A caller's client is copied, not changed.
func (c Config) httpClient() (*http.Client, error) {
	if c.HTTPClient != nil {
		return noRedirects(c.HTTPClient), nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Unwrap bursts at boot come from many volumes at once.
	t.MaxIdleConnsPerHost = 64
	if c.socketPath != "" {
		// A proxy from the environment must not take requests meant for
		// a socket on this host.
		t.Proxy = nil
		path := c.socketPath
		var d net.Dialer
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
	}
	if c.CAFile != "" || c.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("huaweicloud kms: ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("huaweicloud kms: ca_file %s holds no PEM certificate", c.CAFile)
			}
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("huaweicloud kms: cert_file %s, key_file %s: %w", c.CertFile, c.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		t.TLSClientConfig = tc
	}
	return noRedirects(&http.Client{Transport: t}), nil
}

// noRedirects returns a copy of hc that does not follow redirects.
func noRedirects(hc *http.Client) *http.Client {
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}
	return &c
}

// metadataHTTPClient reaches the link-local metadata service directly: a
// proxy from the environment could not reach it, and must not see the
// temporary credentials it hands out.
func metadataHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return noRedirects(&http.Client{Transport: t})
}
