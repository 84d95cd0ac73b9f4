package tstest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// Where packaging/setup-dev.sh installs the AWS KMS emulator.
const (
	defaultLocalKMS = "/opt/kmsagent-tools/bin/local-kms"
	localKMSHint    = "packaging/setup-dev.sh installs it with " +
		"`GOBIN=/opt/kmsagent-tools/bin go install github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6`; " +
		"or point KMSAGENT_LOCAL_KMS at a binary"
)

// FindLocalKMS returns the local-kms binary (AWS KMS emulator):
// $KMSAGENT_LOCAL_KMS, local-kms on PATH, or where the project setup
// installs it. Without one the test is Unavailable.
func FindLocalKMS(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KMSAGENT_LOCAL_KMS"); p != "" {
		return p
	}
	if p, err := exec.LookPath("local-kms"); err == nil {
		return p
	}
	if _, err := os.Stat(defaultLocalKMS); err == nil {
		return defaultLocalKMS
	}
	Unavailable(t, "local-kms not found on PATH or at %s; %s", defaultLocalKMS, localKMSHint)
	return ""
}

var localKMSStarted = regexp.MustCompile(`Local KMS started on [0-9.]*:([0-9]+)`)

// StartLocalKMS runs local-kms for account and region with its data in
// a temporary directory and returns its endpoint on 127.0.0.1
// ("http://127.0.0.1:PORT"). It is killed when the test ends, and its
// output logged if the test failed.
//
// local-kms listens on all interfaces and has no option to bind one, so
// tests only ever address it as 127.0.0.1. PORT=0 lets the kernel pick a
// free port (no race with other tests for a "free" one); the port is read
// from the startup line. It binds its port before it prints that line,
// so a first call is queued until it serves.
func StartLocalKMS(t testing.TB, account, region string) string {
	t.Helper()
	bin := FindLocalKMS(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"PORT=0",
		"KMS_DATA_PATH="+t.TempDir(),
		"KMS_ACCOUNT_ID="+account,
		"KMS_REGION="+region,
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	var log Buffer
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("local-kms output:\n%s", log.String())
		}
	})
	port := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(io.TeeReader(out, &log))
		for sc.Scan() {
			if m := localKMSStarted.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
		// Drain whatever follows a line too long to scan, then reap.
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
	}()
	select {
	case p := <-port:
		return "http://127.0.0.1:" + p
	case <-exited:
		t.Fatalf("local-kms exited before it started:\n%s", log.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("local-kms did not start within 15s:\n%s", log.String())
	}
	return ""
}
