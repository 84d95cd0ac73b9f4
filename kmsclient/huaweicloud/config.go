package huaweicloud

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"kmsagent/kmsclient/secret"
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
	Endpoint         string        // e.g. https://kms.<region>.myhuaweicloud.com; from Region (regions.go) when empty
	ProjectID        string        // required
	Region           string        // reported by DescribeKey; names the default endpoint
	Credentials      string        // "static" (default) or "metadata"
	AccessKey        string        // static
	SecretKeyFile    string        // static: file holding the SK, mode 0600 or stricter
	MetadataEndpoint string        // default http://169.254.169.254
	AADField         string        // "additional_authenticated_data" (default) or "encryption_context"
	Timeout          time.Duration // per request, default 10s
	HTTPClient       *http.Client  // optional, tests; also used for the metadata service; its redirects are never followed
}

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
	base, err := url.Parse(strings.TrimSuffix(c.Endpoint, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return c, nil, fmt.Errorf("huaweicloud kms: endpoint %q is not an http(s) URL such as https://kms.<region>.myhuaweicloud.com", c.Endpoint)
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

// noRedirects returns hc, or a default client, that does not follow
// redirects: a signed request, and any key material in it, goes to the
// configured endpoint or nowhere. A caller's client is copied, not changed.
func noRedirects(hc *http.Client) *http.Client {
	var c http.Client
	if hc != nil {
		c = *hc
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Unwrap bursts at boot come from many volumes at once.
		t.MaxIdleConnsPerHost = 64
		c.Transport = t
	}
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
