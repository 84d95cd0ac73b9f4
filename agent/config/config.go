// Package config reads kmsagent's TOML configuration. Unknown keys and
// wrong types are errors that name the key and its line: a typo in a
// security setting must never be silently ignored.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is used when neither --config nor KMSAGENT_CONFIG is given.
const DefaultPath = "/etc/kmsagent/agent.toml"

// DefaultServeSocket is where kms serve listens for clients on this host.
const DefaultServeSocket = "/run/kmsagent/kms.sock"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "KMSAGENT_CONFIG"

// Providers kmsagent knows.
const (
	ProviderLocal       = "local"
	ProviderHuaweiCloud = "huaweicloud"
	ProviderAWS         = "aws"
)

// Config is the whole configuration file.
type Config struct {
	KMS     KMS      `toml:"kms"`
	Agent   Agent    `toml:"agent"`
	Volumes []Volume `toml:"volume"`
	// Path is the file the configuration was read from, empty for the
	// built-in defaults.
	Path string `toml:"-"`
}

// KMS selects and configures the key management service.
type KMS struct {
	Provider    string      `toml:"provider"`
	Timeout     Duration    `toml:"timeout"`
	Local       Local       `toml:"local"`
	HuaweiCloud HuaweiCloud `toml:"huaweicloud"`
	AWS         AWS         `toml:"aws"`
	Serve       Serve       `toml:"serve"`
}

// Local is the embedded KMS.
type Local struct {
	StateDir string `toml:"state_dir"`
}

// HuaweiCloud is Huawei Cloud KMS (API v1.0).
type HuaweiCloud struct {
	Endpoint         string `toml:"endpoint"`
	ProjectID        string `toml:"project_id"`
	Region           string `toml:"region"`
	Credentials      string `toml:"credentials"`
	AccessKey        string `toml:"access_key"`
	SecretKeyFile    string `toml:"secret_key_file"`
	MetadataEndpoint string `toml:"metadata_endpoint"`
	AADField         string `toml:"aad_field"`
	// CAFile, CertFile and KeyFile set up TLS to the endpoint: the CA
	// to trust instead of the system roots, and a client certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Serve configures `kmsagent kms serve`, which serves the embedded KMS.
type Serve struct {
	// Socket is the unix socket for clients on this host (root and
	// SocketGroup); empty for none.
	Socket      string `toml:"socket"`
	SocketGroup string `toml:"socket_group"`
	// Listen is a TCP address; it needs clients, and TLS unless it is a
	// loopback address.
	Listen            string        `toml:"listen"`
	TLSCert           string        `toml:"tls_cert"`
	TLSKey            string        `toml:"tls_key"`
	ClientCA          string        `toml:"client_ca"`
	ProjectID         string        `toml:"project_id"`
	MaxConnections    int           `toml:"max_connections"`
	RequestsPerSecond float64       `toml:"requests_per_second"`
	Burst             int           `toml:"burst"`
	ReadHeaderTimeout Duration      `toml:"read_header_timeout"`
	ReadTimeout       Duration      `toml:"read_timeout"`
	WriteTimeout      Duration      `toml:"write_timeout"`
	IdleTimeout       Duration      `toml:"idle_timeout"`
	Clients           []ServeClient `toml:"client"`
}

// ServeClient is one access key kms serve accepts.
type ServeClient struct {
	AccessKey     string   `toml:"access_key"`
	SecretKeyFile string   `toml:"secret_key_file"`
	Keys          []string `toml:"keys"` // CMK ids or aliases; "*" for all
}

// AWS is AWS KMS.
type AWS struct {
	Region   string `toml:"region"`
	Endpoint string `toml:"endpoint"`
}

// Default returns the configuration used when no file exists: the embedded
// local KMS under /var/lib/kmsagent.
func Default() *Config {
	return &Config{KMS: KMS{
		Provider: ProviderLocal,
		Timeout:  Duration(10 * time.Second),
		Local:    Local{StateDir: "/var/lib/kmsagent/kms"},
		HuaweiCloud: HuaweiCloud{
			Credentials:      "static",
			MetadataEndpoint: "http://169.254.169.254",
			AADField:         "additional_authenticated_data",
		},
		Serve: Serve{
			Socket:            DefaultServeSocket,
			MaxConnections:    256,
			RequestsPerSecond: 50,
			Burst:             500,
			ReadHeaderTimeout: Duration(5 * time.Second),
			ReadTimeout:       Duration(10 * time.Second),
			WriteTimeout:      Duration(10 * time.Second),
			IdleTimeout:       Duration(60 * time.Second),
		},
	}, Agent: Agent{
		Socket:           DefaultAgentSocket,
		CryptsetupSocket: DefaultCryptsetupSocket,
		Crypttab:         DefaultCrypttab,
		StateDir:         DefaultStateDir,
		AuditLog:         DefaultAuditLog,
		RetryMinDelay:    Duration(2 * time.Second),
		RetryMaxDelay:    Duration(5 * time.Minute),
	}}
}

// Path returns the configuration file to read: the flag value, else
// $KMSAGENT_CONFIG, else DefaultPath. explicit reports whether the admin
// named it, in which case it must exist.
func Path(flagValue string) (path string, explicit bool) {
	if flagValue != "" {
		return flagValue, true
	}
	if env := os.Getenv(EnvPath); env != "" {
		return env, true
	}
	return DefaultPath, false
}

// Load reads the configuration at path. A missing file is an error only
// when explicit; otherwise the defaults apply.
func Load(path string, explicit bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s%w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// Parse decodes and validates a configuration document on top of the
// defaults. Errors start with ":LINE:" or ": " so the caller can prefix
// the file name.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, describe(err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf(": %w", err)
	}
	return cfg, nil
}

// describe turns go-toml's errors into one line naming the key and line.
func describe(err error) error {
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) && len(missing.Errors) > 0 {
		var keys []string
		line := 0
		for i := range missing.Errors {
			e := &missing.Errors[i]
			keys = append(keys, strings.Join(e.Key(), "."))
			if line == 0 {
				line, _ = e.Position()
			}
		}
		return fmt.Errorf(":%d: unknown key %s; see the example config for the keys kmsagent reads", line, strings.Join(keys, ", "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		msg := firstLine(de.Error())
		if m := typeMismatch.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("wrong type: a TOML %s where a %s is expected", m[1], m[2])
		}
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf(":%d:%d: %s: %s", line, col, strings.Join(k, "."), msg)
		}
		return fmt.Errorf(":%d:%d: %s", line, col, msg)
	}
	return fmt.Errorf(": %s", firstLine(err.Error()))
}

// typeMismatch matches go-toml's wording, which names Go struct fields that
// mean nothing to an admin.
var typeMismatch = regexp.MustCompile(`cannot decode TOML (\w+) into .* of type (\S+)`)

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimPrefix(s, "toml: ")
}

func (c *Config) validate() error {
	k := &c.KMS
	// A bare number decodes as nanoseconds; no KMS answers that fast, so
	// this also catches timeout = 10 meant as seconds.
	if k.Timeout < Duration(100*time.Millisecond) || k.Timeout > Duration(10*time.Minute) {
		return fmt.Errorf("kms.timeout = %v is out of range: write a duration string from \"100ms\" to \"10m\", e.g. \"10s\"", k.Timeout.Std())
	}
	if err := k.Serve.validate(); err != nil {
		return err
	}
	if err := c.Agent.validate(); err != nil {
		return err
	}
	if err := ValidateVolumes(c.Volumes); err != nil {
		return err
	}
	switch k.Provider {
	case ProviderLocal:
		if k.Local.StateDir == "" {
			return fmt.Errorf("kms.local.state_dir is empty")
		}
	case ProviderHuaweiCloud:
		h := &k.HuaweiCloud
		if h.ProjectID == "" {
			return fmt.Errorf("kms.huaweicloud.project_id is required")
		}
		if h.Endpoint == "" && h.Region == "" {
			return fmt.Errorf("kms.huaweicloud: set region (or endpoint)")
		}
		switch h.Credentials {
		case "static":
			if h.AccessKey == "" || h.SecretKeyFile == "" {
				return fmt.Errorf("kms.huaweicloud: credentials = \"static\" needs access_key and secret_key_file")
			}
		case "metadata":
		default:
			return fmt.Errorf("kms.huaweicloud.credentials = %q, want \"static\" or \"metadata\"", h.Credentials)
		}
		switch h.AADField {
		case "additional_authenticated_data", "encryption_context":
		default:
			return fmt.Errorf("kms.huaweicloud.aad_field = %q, want \"additional_authenticated_data\" or \"encryption_context\"", h.AADField)
		}
	case ProviderAWS:
		if k.AWS.Region == "" && os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			return fmt.Errorf("kms.aws.region is required (or AWS_REGION in the environment)")
		}
	default:
		return fmt.Errorf("kms.provider = %q, want \"local\", \"huaweicloud\" or \"aws\"", k.Provider)
	}
	return nil
}

func (s *Serve) validate() error {
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return errors.New("kms.serve: tls_cert and tls_key go together")
	}
	if s.ClientCA != "" && s.TLSCert == "" {
		return errors.New("kms.serve: client_ca needs tls_cert and tls_key")
	}
	if s.MaxConnections < 1 || s.MaxConnections > 1<<20 {
		return fmt.Errorf("kms.serve.max_connections = %d is out of range: 1 to 1048576", s.MaxConnections)
	}
	if s.RequestsPerSecond <= 0 || s.Burst < 1 {
		return errors.New("kms.serve: requests_per_second and burst must be positive")
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"read_header_timeout", s.ReadHeaderTimeout}, {"read_timeout", s.ReadTimeout}, {"write_timeout", s.WriteTimeout}, {"idle_timeout", s.IdleTimeout}} {
		if d.v < Duration(100*time.Millisecond) || d.v > Duration(time.Hour) {
			return fmt.Errorf("kms.serve.%s = %v is out of range: write a duration string from \"100ms\" to \"1h\"", d.name, d.v.Std())
		}
	}
	seen := map[string]bool{}
	for i, c := range s.Clients {
		if c.AccessKey == "" || c.SecretKeyFile == "" {
			return fmt.Errorf("kms.serve.client[%d]: access_key and secret_key_file are required", i)
		}
		if seen[c.AccessKey] {
			return fmt.Errorf("kms.serve.client[%d]: access_key %s is listed twice", i, c.AccessKey)
		}
		seen[c.AccessKey] = true
		if len(c.Keys) == 0 {
			return fmt.Errorf("kms.serve.client[%d] (%s): keys is empty; list the CMK ids or aliases it may use, or \"*\" for all", i, c.AccessKey)
		}
		for _, k := range c.Keys {
			if k == "" {
				return fmt.Errorf("kms.serve.client[%d] (%s): keys holds an empty name", i, c.AccessKey)
			}
		}
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (use e.g. \"10s\" or \"1m\")", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
