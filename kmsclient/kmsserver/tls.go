package kmsserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// TLSFiles is the server's certificate, its key and optionally the CA of
// client certificates, read from files and re-read by Reload (kms serve
// calls it on SIGHUP), so a renewed certificate needs no restart.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes a client certificate signed by one of
	// its CAs required, on top of the request signature.
	ClientCAFile string

	cur atomic.Pointer[tls.Config]
}

// ErrNoCertificate is returned for a CA file without a certificate.
var ErrNoCertificate = errors.New("no PEM certificate in the file")

// Reload reads the files. On error the configuration in use stays.
func (f *TLSFiles) Reload() error {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", f.CertFile, f.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	if f.ClientCAFile != "" {
		pool, err := loadCertPool(f.ClientCAFile)
		if err != nil {
			return err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	f.cur.Store(cfg)
	return nil
}

// config returns a TLS configuration that uses whatever Reload last read,
// for each new connection.
func (f *TLSFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if c := f.cur.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no TLS certificate loaded")
		},
	}
}

// loadCertPool reads PEM certificates from path.
func loadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: %w", path, ErrNoCertificate)
	}
	return pool, nil
}
