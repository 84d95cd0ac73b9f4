package share

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
	"kmsagent/agent/safepath"
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
			out = append(out, Mount{Mountpoint: m.Mountpoint, CipherDir: m.Source, Options: m.Options, FSType: m.FSType})
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
		return fmt.Errorf("%s is already a kmsagent mount of %s; run kmsagent umount %s first", me.Path, me.Source, me.Path)
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
	// The path comes from the mount table, free of symlinks; one
	// planted since is not followed.
	flags := unix.UMOUNT_NOFOLLOW
	if lazy {
		flags |= unix.MNT_DETACH
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
