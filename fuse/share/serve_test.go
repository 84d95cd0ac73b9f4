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
	w, _ := serveRecord(t)
	return w.Mountpoint
}

// serveRecord is serve, returning the serving process's record and the
// run directory it is kept in.
func serveRecord(t *testing.T) (Worker, string) {
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
	runDir := t.TempDir()
	ready := make(chan Worker, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeOptions{
			CipherDir: dir, Mountpoint: mnt, KMS: kms, RunDir: runDir,
			Ready: func(w Worker) { ready <- w },
		})
	}()
	var w Worker
	select {
	case w = <-ready:
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
	return w, runDir
}

// TestReapLeavesLiveMount: a reaper that wakes after its worker's mount
// is gone can find the mount ID and device the kernel gave that mount
// on a new mount of the same share. A mount whose server answers is not
// the dead worker's and stays; the record of the dead one goes.
func TestReapLeavesLiveMount(t *testing.T) {
	tstest.NeedRoot(t, "to ask a FUSE mount's server (statfs)")
	live, runDir := serveRecord(t)
	if live.MountID == 0 {
		t.Fatal("the serving process published no record")
	}
	// The worker that had the mount ID and device before: the same
	// share and mount point, a process that is gone.
	dead := live
	dead.Start++
	if dead.Liveness() != Gone {
		t.Fatal("the stand-in for a dead worker is not gone")
	}
	removed, err := Reap(runDir, dead)
	if err != nil {
		t.Fatal(err)
	}
	if removed {
		t.Error("Reap reported a live mount removed")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(live.Mountpoint, &st); err != nil {
		t.Fatalf("the live mount was removed: %v", err)
	}
	m, err := FindMount(live.Mountpoint)
	if err != nil || m.ID != live.MountID {
		t.Fatalf("the live mount is not in the mount table: %v", err)
	}
	ws, err := Workers(runDir)
	if err != nil || len(ws) != 1 || ws[0] != live {
		t.Errorf("records %+v (%v), want the live worker's only", ws, err)
	}
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
