package tstest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
)

// WorkerSocket does what systemd does for kmsagent-worker.socket
// (ListenStream=, Accept=yes, StandardInput=socket): it listens on path
// and, for every connection, starts name with args and the connection
// as its standard input, its output going to the test's standard error.
// It stops listening when the test ends; the processes it started are
// the test's to end (a share worker lives as long as its mount).
func WorkerSocket(t testing.TB, path string, env []string, name string, args ...string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.AcceptUnix()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("worker socket: %v", err)
				return
			}
			f, err := conn.File()
			conn.Close()
			if err != nil {
				t.Errorf("worker socket: %v", err)
				continue
			}
			cmd := exec.Command(name, args...)
			cmd.Env = append(os.Environ(), env...)
			cmd.Stdin = f
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			cmd.Dir = "/"
			if err := cmd.Start(); err != nil {
				t.Errorf("worker socket: %v", err)
				f.Close()
				continue
			}
			f.Close()
			go cmd.Wait()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}
