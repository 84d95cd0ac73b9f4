package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1, which is
// also its own CA file, and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "kms.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first: a reload between the two writes fails and keeps the old
	// pair rather than mixing them.
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})), 0o600)
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
}

// TestServeTLS serves over TLS from the certificate flags, reaches it with
// ca_file from a client configuration, and swaps the certificate with
// SIGHUP.
func TestServeTLS(t *testing.T) {
	server := localCLI(t)
	id := strings.TrimSpace(server.run("kms", "create-key", "--alias", "tls").stdout)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key, 1)
	sk := writeFile(t, filepath.Join(dir, "sk"), "c2VjcmV0LWtleS1mb3ItdGxzLXRlc3Rz\n", 0o600)
	base, err := os.ReadFile(server.config)
	if err != nil {
		t.Fatal(err)
	}
	serveCfg := &cli{t: t, config: writeFile(t, filepath.Join(dir, "serve.toml"), string(base)+fmt.Sprintf(`
[[kms.serve.client]]
access_key = "AK1"
secret_key_file = %q
keys = ["tls"]
`, sk), 0o600)}
	addr := freePort(t)

	// kms serve sends READY=1 once it listens and again after a reload.
	ready := tstest.NotifySocket(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- serveCfg.runCtx(ctx, "kms", "serve", "--socket", "", "--listen", addr, "--tls-cert", cert, "--tls-key", key, "--project-id", "proj")
	}()
	defer func() {
		cancel()
		if r := <-done; r.code != 0 || !strings.Contains(r.stderr, "TLS certificate reloaded") {
			t.Errorf("serve exited %d: %s", r.code, r.stderr)
		}
	}()
	serial := func() int64 {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return -1
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	ready.Wait(t, 10*time.Second, "READY=1")
	if got := serial(); got != 1 {
		t.Fatalf("the server presents certificate %d, want 1", got)
	}

	client := func(extra string) *cli {
		cfg := fmt.Sprintf("[kms]\nprovider = \"huaweicloud\"\ntimeout = \"5s\"\n[kms.huaweicloud]\nendpoint = \"https://%s\"\nproject_id = \"proj\"\naccess_key = \"AK1\"\nsecret_key_file = %q\n%s", addr, sk, extra)
		return &cli{t: t, config: writeFile(t, filepath.Join(dir, fmt.Sprintf("client-%d.toml", time.Now().UnixNano())), cfg, 0o600)}
	}
	withCA := client(fmt.Sprintf("ca_file = %q\n", cert))
	if r := withCA.run("kms", "describe-key", id); r.code != 0 || !strings.Contains(r.stdout, "tls") {
		t.Fatalf("describe-key over TLS: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := client("").run("kms", "describe-key", id); r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("a client without the CA was served: %d %q", r.code, r.stderr)
	}

	writeSelfSigned(t, cert, key, 2)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ready.Wait(t, 10*time.Second, "READY=1")
	if got := serial(); got != 2 {
		t.Fatalf("after SIGHUP the server presents certificate %d, want 2", got)
	}
	if r := client(fmt.Sprintf("ca_file = %q\n", cert)).run("kms", "describe-key", id); r.code != 0 {
		t.Fatalf("describe-key after the reload: %d %q", r.code, r.stderr)
	}
}
