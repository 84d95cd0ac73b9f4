package kmsserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/kmsserver"
	"kmsagent/kmsclient/kmstest"
	"kmsagent/kmsclient/local"
)

// testCA issues certificates for the tests, as an admin's lab CA would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of the CA certificate
}

func newTestCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a leaf certificate and its key and returns their files.
func (ca *testCA) issue(t testing.TB, dir, name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// served is a Server on one listener, stopped at the end of the test.
type served struct {
	store *local.Store
	srv   *kmsserver.Server
	log   *tstest.Buffer
}

func serveOn(t testing.TB, ln net.Listener, opts kmsserver.Options, limits kmsserver.Limits, tlsFiles *kmsserver.TLSFiles) *served {
	t.Helper()
	store, err := local.Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	s := &served{store: store, log: &tstest.Buffer{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(s.log, nil))
	}
	s.srv = kmsserver.NewServer(store, opts, limits, tlsFiles)
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func skFile(t testing.TB, sk string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sk")
	if err := os.WriteFile(p, []byte(sk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConformanceTransports runs the provider suite through the
// huaweicloud client over TLS with a CA of the test's own, over mutual
// TLS, and over the unix socket.
func TestConformanceTransports(t *testing.T) {
	dir := t.TempDir()
	serverCA := newTestCA(t, dir, "server-ca")
	clientCA := newTestCA(t, dir, "client-ca")
	srvCert, srvKey := serverCA.issue(t, dir, "server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := clientCA.issue(t, dir, "client", 3, x509.ExtKeyUsageClientAuth)
	sock := filepath.Join(dir, "kms.sock")

	tests := []struct {
		name     string
		network  string
		tlsFiles *kmsserver.TLSFiles
		cfg      func(addr string) huaweicloud.Config
	}{
		{"tls", "tcp", &kmsserver.TLSFiles{CertFile: srvCert, KeyFile: srvKey}, func(addr string) huaweicloud.Config {
			return huaweicloud.Config{Endpoint: "https://" + addr, CAFile: serverCA.file}
		}},
		{"mtls", "tcp", &kmsserver.TLSFiles{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: clientCA.file}, func(addr string) huaweicloud.Config {
			return huaweicloud.Config{Endpoint: "https://" + addr, CAFile: serverCA.file, CertFile: cliCert, KeyFile: cliKey}
		}},
		{"unix", "unix", nil, func(string) huaweicloud.Config {
			return huaweicloud.Config{Endpoint: "unix://" + sock}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if tc.network == "unix" {
				addr = sock
			}
			ln, err := net.Listen(tc.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tlsFiles != nil {
				if err := tc.tlsFiles.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			s := serveOn(t, ln, authOpts(), kmsserver.Limits{}, tc.tlsFiles)
			cfg := tc.cfg(ln.Addr().String())
			cfg.ProjectID, cfg.AccessKey, cfg.SecretKeyFile = testProject, testAK, skFile(t, testSK)
			c, err := huaweicloud.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			kmstest.Run(t, harness(t, &fixture{store: s.store}, c))
		})
	}

	t.Run("mtls without a client certificate", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		files := &kmsserver.TLSFiles{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: clientCA.file}
		if err := files.Reload(); err != nil {
			t.Fatal(err)
		}
		s := serveOn(t, ln, authOpts(), kmsserver.Limits{}, files)
		info, _ := s.store.CreateKey(context.Background(), "", "")
		wrongCert, wrongKey := serverCA.issue(t, t.TempDir(), "stranger", 9, x509.ExtKeyUsageClientAuth)
		for name, cfg := range map[string]huaweicloud.Config{
			"no certificate":            {CAFile: serverCA.file},
			"certificate of another CA": {CAFile: serverCA.file, CertFile: wrongCert, KeyFile: wrongKey},
			"server CA unknown":         {CertFile: cliCert, KeyFile: cliKey},
		} {
			cfg.Endpoint, cfg.ProjectID, cfg.AccessKey, cfg.SecretKeyFile = "https://"+ln.Addr().String(), testProject, testAK, skFile(t, testSK)
			c, err := huaweicloud.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.DescribeKey(context.Background(), info.ID); err == nil {
				t.Errorf("%s: request served", name)
			}
		}
	})
}

// fakeListener has an address but accepts nothing: Check looks only at
// the address, so no test listens on every interface.
type fakeListener struct{ addr net.Addr }

func (l fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr            { return l.addr }

// TestListenerRefusals: TCP without access keys, and off loopback without
// TLS, is refused before anything is served.
func TestListenerRefusals(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "server", 2, x509.ExtKeyUsageServerAuth)
	files := &kmsserver.TLSFiles{CertFile: cert, KeyFile: key}
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	anyAddr := &net.TCPAddr{IP: net.IPv4zero, Port: 8443}
	public := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 8443}
	tests := []struct {
		name string
		opts kmsserver.Options
		tls  *kmsserver.TLSFiles
		addr net.Addr
		want error
	}{
		{"loopback without keys", kmsserver.Options{}, nil, loopback, kmsserver.ErrNoClients},
		{"loopback without keys, with TLS", kmsserver.Options{}, files, loopback, kmsserver.ErrNoClients},
		{"loopback with keys", authOpts(), nil, loopback, nil},
		{"any address without TLS", authOpts(), nil, anyAddr, kmsserver.ErrNeedsTLS},
		{"public address without TLS", authOpts(), nil, public, kmsserver.ErrNeedsTLS},
		{"public address with TLS", authOpts(), files, public, nil},
		{"unix socket without keys", kmsserver.Options{}, nil, &net.UnixAddr{Name: "/run/kmsagent/kms.sock", Net: "unix"}, nil},
		{"datagram", authOpts(), nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, kmsserver.ErrListenType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := kmsserver.NewServer(nil, tc.opts, kmsserver.Limits{}, tc.tls)
			err := srv.Check(fakeListener{tc.addr})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if err := srv.Serve(fakeListener{tc.addr}); !errors.Is(err, tc.want) {
					t.Fatalf("Serve = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

// TestTLSReload: a renewed certificate is served to new connections after
// Reload, and a broken file leaves the old one in use.
func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "server", 100, x509.ExtKeyUsageServerAuth)
	files := &kmsserver.TLSFiles{CertFile: cert, KeyFile: key}
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, authOpts(), kmsserver.Limits{}, files)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	serial := func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}
	ca.issue(t, dir, "server", 101, x509.ExtKeyUsageServerAuth) // renewed in place
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != 101 {
		t.Fatalf("after reload: serial %d, want 101", got)
	}
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := files.Reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	if got := serial(); got != 101 {
		t.Fatalf("after a failed reload: serial %d, want 101", got)
	}
}
