package share

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// serve formats a new share and serves it in the background until the
// test ends; it returns the mount point once the mount is ready.
func serve(t *testing.T) string {
	t.Helper()
	tstest.NeedFUSE(t)
	kms, keyID := tstest.LocalKMS(t, "")
	dir := t.TempDir()
	if _, err := Format(context.Background(), kms, dir, keyID, false); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeOptions{
			CipherDir: dir, Mountpoint: mnt, KMS: kms, RunDir: t.TempDir(),
			Ready: func(Worker) { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return mnt
}

// TestServeUmask creates entries from another process with its own umask
// while the serving process has a different one: the modes must be those
// the caller's umask gives, masked once.
func TestServeUmask(t *testing.T) {
	tstest.NeedFUSE(t)
	cases := []struct {
		name                   string
		serverUmask, userUmask int
		file, dir              os.FileMode
	}{
		{"user-002", 0o022, 0o002, 0o664, 0o775},
		{"server-077", 0o077, 0o022, 0o644, 0o755},
		{"user-000", 0o022, 0o000, 0o666, 0o777},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old := unix.Umask(c.serverUmask)
			t.Cleanup(func() { unix.Umask(old) })
			mnt := serve(t)
			script := `umask "$U" && cd "$M" && touch file && mkdir dir && mkfifo fifo && ln -s file link`
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Env = []string{"M=" + mnt, "U=0" + strconv.FormatInt(int64(c.userUmask), 8), "PATH=/usr/bin:/bin"}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			for _, e := range []struct {
				name string
				want os.FileMode
			}{{"file", c.file}, {"dir", c.dir}, {"fifo", c.file}} {
				st, err := os.Lstat(filepath.Join(mnt, e.name))
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Mode().Perm(); got != e.want {
					t.Errorf("%s: mode %#o, want %#o", e.name, got, e.want)
				}
			}
			if _, err := os.Readlink(filepath.Join(mnt, "link")); err != nil {
				t.Error(err)
			}
		})
	}
}
