package share

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
	"kmsagent/agent/safepath"
	"kmsagent/fuse/cryptfs"
)

// Mount is one of our mounts as /proc/self/mountinfo lists it.
type Mount struct {
	Mountpoint string
	CipherDir  string // the mount source
	Options    string
	FSType     string
	ID         int    // mount ID
	Dev        uint64 // st_dev of the mounted file system
}

// ParseMountInfo returns the fuse.kmsagent mounts in a mountinfo table.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	all, err := mountinfo.Parse(r)
	return ours(all), err
}

// Mounts lists our mounts on this host.
func Mounts() ([]Mount, error) {
	all, err := mountinfo.Read()
	return ours(all), err
}

func ours(all []mountinfo.Entry) []Mount {
	var out []Mount
	for _, m := range all {
		if m.FSType == "fuse."+cryptfs.Subtype {
			out = append(out, Mount{Mountpoint: m.Mountpoint, CipherDir: m.Source, Options: m.Options, FSType: m.FSType, ID: m.ID, Dev: m.Dev})
		}
	}
	return out
}

// CheckMountpoint refuses a mount point that Mount would refuse, before
// any key is unwrapped: a path with a symlink in it, and a directory
// something is mounted on already (mounting over it would hide that
// mount, or stack on a dead one).
func CheckMountpoint(mountpoint string) error {
	mp, err := safepath.OpenMountpoint(mountpoint)
	var me *safepath.MountedError
	switch {
	case errors.As(err, &me) && me.FSType == "fuse."+cryptfs.Subtype:
		return &MountedError{Path: me.Path, CipherDir: me.Source}
	case errors.As(err, &me):
		return fmt.Errorf("%w; mount the share on an unused directory", err)
	case err != nil:
		return err
	}
	return mp.Close()
}

// FindMount returns our mount at mountpoint (absolute).
func FindMount(mountpoint string) (Mount, error) {
	ms, err := Mounts()
	if err != nil {
		return Mount{}, fmt.Errorf("list mounts: %w", err)
	}
	for _, m := range ms {
		if m.Mountpoint == mountpoint {
			return m, nil
		}
	}
	return Mount{}, fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
}

// workerExitTimeout bounds the wait for the worker to wipe and exit after
// the kernel let go of the mount.
const workerExitTimeout = 30 * time.Second

// Unmount unmounts m and waits for its worker to exit, which it does
// after wiping its keys; lazy detaches a busy mount and does not wait.
// A stale mount (its worker is gone) is removed, lazily if busy: nothing
// is left to flush. It returns the state m was in.
func Unmount(ctx context.Context, runDir string, m Mount, lazy bool) (State, error) {
	st, w := stateOf(runDir, m)
	if st == StateStale {
		return st, removeStale(runDir, m, w)
	}
	if err := unmount(m.Mountpoint, lazy); err != nil {
		return st, err
	}
	if lazy {
		return st, nil
	}
	if w != nil {
		return st, waitExit(ctx, *w, m.Mountpoint)
	}
	// A worker without a record: from before records, or one that has
	// not written it yet. Its lock goes when it exits.
	deadline := time.Now().Add(workerExitTimeout)
	for {
		held, err := Held(runDir, m.CipherDir)
		if err != nil || !held {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%s unmounted, but its worker has not exited after %v", m.Mountpoint, workerExitTimeout)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitExit waits for w's process to exit.
func waitExit(ctx context.Context, w Worker, mountpoint string) error {
	fd, err := unix.PidfdOpen(w.PID, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(fd)
	// The PID could have been reused before the pidfd was opened.
	if w.Liveness() == Gone {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, workerExitTimeout)
	defer cancel()
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for the worker of %s: %w", mountpoint, err)
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s unmounted, but its worker (pid %d) has not exited after %v", mountpoint, w.PID, workerExitTimeout)
			}
			return ctx.Err()
		}
	}
}

// State is what a mount's worker is doing, as seen from outside.
type State string

const (
	StateRunning State = "running"
	// StateStale: the worker is gone (killed, crashed) and the kernel
	// answers every access with ENOTCONN until the mount is removed.
	StateStale State = "stale"
	// StateDetached: unmounted lazily (umount --lazy, or a busy
	// shutdown). The mount is out of the mount table, but its worker
	// serves the files still open, and holds its keys, until the last
	// one is closed.
	StateDetached State = "detached"
	// StateUnknown: this user cannot tell (/proc hides the worker, or
	// there is no record and the lock is root's).
	StateUnknown State = "unknown"
)

// MountStatus is one of our mounts, or a detached mount still served.
type MountStatus struct {
	Mount
	State  State
	Worker *Worker // nil without a record
	// OpenFiles counts the open files on a detached mount;
	// OpenFilesPartial says some processes' could not be seen (another
	// user's, or a process this root may not trace).
	OpenFiles        int
	OpenFilesPartial bool
}

// Status lists our mounts and the detached ones whose workers still run.
func Status(runDir string) ([]MountStatus, error) { return StatusOf(mountinfo.Self, runDir) }

// StatusOf is Status read from the mount table at table (a
// mountinfo.Self or mountinfo.Host).
func StatusOf(table, runDir string) ([]MountStatus, error) {
	all, err := mountinfo.ReadFile(table)
	mounts := ours(all)
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	workers, _ := Workers(runDir)
	var out []MountStatus
	for _, m := range mounts {
		st, w := state(runDir, m, workers)
		out = append(out, MountStatus{Mount: m, State: st, Worker: w})
	}
	for _, w := range workers {
		if _, ok := mountOf(mounts, w); ok || w.Liveness() == Gone {
			continue
		}
		m := Mount{Mountpoint: w.Mountpoint, CipherDir: w.CipherDir, FSType: "fuse." + cryptfs.Subtype, ID: w.MountID, Dev: w.Dev}
		n, partial := openFiles(w.MountID)
		out = append(out, MountStatus{Mount: m, State: StateDetached, Worker: &w, OpenFiles: n, OpenFilesPartial: partial})
	}
	return out, nil
}

// stateOf is the state of mount m.
func stateOf(runDir string, m Mount) (State, *Worker) {
	workers, _ := Workers(runDir)
	return state(runDir, m, workers)
}

func state(runDir string, m Mount, workers []Worker) (State, *Worker) {
	for _, w := range workers {
		if w.MountID != m.ID || w.Dev != m.Dev {
			continue
		}
		switch w.Liveness() {
		case Alive:
			return StateRunning, &w
		case Gone:
			// Its mount ID and device could have been given to a
			// new mount since: root asks the kernel before calling
			// it stale.
			if probe(m.Mountpoint) == StateRunning {
				return StateUnknown, &w
			}
			return StateStale, &w
		default:
			return StateUnknown, &w
		}
	}
	// No record: a worker of an older version, one that has not
	// written it yet, or a server that is not a worker (a test, another
	// program with our file system type). Ask the kernel.
	return probe(m.Mountpoint), nil
}

// probeTimeout bounds the wait for a server that does not answer.
const probeTimeout = 2 * time.Second

// probe asks the FUSE connection of the mount on mountpoint: once the
// server is gone the kernel answers ENOTCONN. Only root is answered for
// a root mount (others get EACCES, or a made-up statfs).
func probe(mountpoint string) State {
	if os.Geteuid() != 0 {
		return StateUnknown
	}
	// A server that hangs would hang statfs; the goroutine is left
	// behind, in a command that is about to exit.
	res := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		res <- unix.Statfs(mountpoint, &st)
	}()
	select {
	case err := <-res:
		switch {
		case err == nil:
			return StateRunning
		case errors.Is(err, unix.ENOTCONN):
			return StateStale
		}
	case <-time.After(probeTimeout):
	}
	return StateUnknown
}

// mountOf finds the mount w serves.
func mountOf(mounts []Mount, w Worker) (Mount, bool) {
	for _, m := range mounts {
		if m.ID == w.MountID && m.Dev == w.Dev {
			return m, true
		}
	}
	return Mount{}, false
}

// openFiles counts the descriptors of all processes open on mount id;
// partial says some processes' could not be read.
func openFiles(mountID int) (n int, partial bool) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, true
	}
	want := "mnt_id:\t" + strconv.Itoa(mountID) + "\n"
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		dir := filepath.Join("/proc", p.Name(), "fdinfo")
		fds, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue // exited
		}
		if err != nil {
			partial = true
			continue
		}
		for _, fd := range fds {
			b, err := os.ReadFile(filepath.Join(dir, fd.Name()))
			if err == nil && strings.Contains(string(b), want) {
				n++
			}
		}
	}
	return n, partial
}

// RemoveStale removes the stale mounts of ours on mountpoint or of
// cipherDir, which a new mount would otherwise collide with, and returns
// them.
func RemoveStale(runDir, mountpoint, cipherDir string) ([]Mount, error) {
	mounts, err := Mounts()
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	workers, _ := Workers(runDir)
	var removed []Mount
	for _, m := range mounts {
		if m.Mountpoint != mountpoint && m.CipherDir != cipherDir {
			continue
		}
		st, w := state(runDir, m, workers)
		if st != StateStale {
			continue
		}
		if err := removeStale(runDir, m, w); err != nil {
			return removed, err
		}
		removed = append(removed, m)
	}
	return removed, nil
}

// Reap removes the mount of w, whose process has exited, if it is still
// there: the worker died without unmounting (killed, or a fatal error in
// the runtime). It reports whether there was one; it refuses while the
// worker's process is there.
//
// The kernel gives a gone mount's ID and device to the next mounts, so
// a reaper that wakes late (a loaded host) can find them on a new mount
// of the same share, served by a live worker: one whose server answers
// is not w's, and is left alone.
func Reap(runDir string, w Worker) (bool, error) {
	mounts, err := Mounts()
	if err != nil {
		return false, fmt.Errorf("list mounts: %w", err)
	}
	m, ok := mountOf(mounts, w)
	if w.Liveness() == Alive {
		return false, fmt.Errorf("the worker of %s (pid %d) is still running", w.Mountpoint, w.PID)
	}
	if ok && (m.Mountpoint != w.Mountpoint || m.CipherDir != w.CipherDir || probe(m.Mountpoint) == StateRunning) {
		ok = false
	}
	if !ok {
		removeRecord(runDir, w)
		return false, nil
	}
	return true, removeStale(runDir, m, &w)
}

// removeStale unmounts a mount whose worker is gone, lazily if busy,
// and removes the worker's record.
func removeStale(runDir string, m Mount, w *Worker) error {
	err := unmount(m.Mountpoint, false)
	if err != nil {
		err = unmount(m.Mountpoint, true)
	}
	if err != nil && gone(m) {
		// Removed meanwhile by another remover: the worker's reaper
		// and a mount or status race for every dead worker's mount.
		err = nil
	}
	if err != nil {
		return fmt.Errorf("remove the stale mount on %s (its worker is gone): %w", m.Mountpoint, err)
	}
	if w != nil {
		removeRecord(runDir, *w)
	}
	return nil
}

// gone reports whether mount m is no longer in the mount table.
func gone(m Mount) bool {
	mounts, err := Mounts()
	if err != nil {
		return false
	}
	_, still := mountOf(mounts, Worker{MountID: m.ID, Dev: m.Dev})
	return !still
}

func unmount(mountpoint string, lazy bool) error {
	if os.Geteuid() != 0 {
		// Unprivileged users unmount their own FUSE mounts through the
		// setuid helper.
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		out, err := exec.Command("fusermount3", append(args, mountpoint)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("unmount %s: %s", mountpoint, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// The path comes from the mount table, free of symlinks; one
	// planted since is not followed.
	flags := unix.UMOUNT_NOFOLLOW
	if lazy {
		flags |= unix.MNT_DETACH
	}
	err := unix.Unmount(mountpoint, flags)
	if errors.Is(err, unix.EBUSY) {
		return &BusyError{Mountpoint: mountpoint}
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	return nil
}
