package share

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	cryptfs "kmsagent/fuse/fs"
)

// Mount is one of our mounts as /proc/self/mountinfo lists it.
type Mount struct {
	Mountpoint string
	CipherDir  string // the mount source
	Options    string
	FSType     string
}

// ParseMountInfo returns the fuse.kmsagent mounts in a mountinfo table.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	all, err := parseAllMountInfo(r)
	if err != nil {
		return nil, err
	}
	var out []Mount
	for _, m := range all {
		if m.FSType == "fuse."+cryptfs.Subtype {
			out = append(out, m)
		}
	}
	return out, nil
}

func parseAllMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 6 || len(g) < 2 {
			continue
		}
		out = append(out, Mount{Mountpoint: unescapeMountInfo(f[4]), CipherDir: unescapeMountInfo(g[1]), Options: f[5], FSType: g[0]})
	}
	return out, sc.Err()
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mounts lists our mounts on this host.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// CheckMountpoint refuses a directory something is mounted on already:
// mounting over it would hide that mount, or stack on a dead one.
func CheckMountpoint(mountpoint string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	all, err := parseAllMountInfo(f)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	for _, m := range all {
		if m.Mountpoint != mountpoint {
			continue
		}
		if m.FSType == "fuse."+cryptfs.Subtype {
			return fmt.Errorf("%s is already a kmsagent mount of %s; run kmsagent umount %s first", mountpoint, m.CipherDir, mountpoint)
		}
		return fmt.Errorf("%s is already a mount point (%s from %s); mount the share on an unused directory", mountpoint, m.FSType, m.CipherDir)
	}
	return nil
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
	return Mount{}, fmt.Errorf("%s is not a kmsagent share mount (see kmsagent status or /proc/mounts)", mountpoint)
}

// workerExitTimeout bounds the wait for the worker to wipe and exit after
// the kernel let go of the mount.
const workerExitTimeout = 30 * time.Second

// Unmount unmounts m and waits for its worker to release the share, which
// it does after wiping its keys. lazy detaches a busy mount.
func Unmount(ctx context.Context, m Mount, lazy bool) error {
	if err := unmount(m.Mountpoint, lazy); err != nil {
		return err
	}
	if lazy {
		return nil
	}
	deadline := time.Now().Add(workerExitTimeout)
	for {
		held, err := Held(DefaultRunDir, m.CipherDir)
		if err != nil || !held {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s unmounted, but its worker has not exited after %v", m.Mountpoint, workerExitTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	err := unix.Unmount(mountpoint, flags)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%s is busy: a process has files open there (see fuser -vm %s); close them, or use kmsagent umount --lazy", mountpoint, mountpoint)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	return nil
}
