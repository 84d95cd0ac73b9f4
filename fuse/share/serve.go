package share

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	"kmsagent/kmsclient"
)

// ServeOptions describe one mount of a share.
type ServeOptions struct {
	CipherDir  string // absolute
	Mountpoint string // absolute
	KMS        kmsclient.KMS
	ReadOnly   bool
	AllowOther bool
	// KernelOptions are passed to the mount as they are (nosuid, nodev, ...).
	KernelOptions []string
	RunDir        string // mount locks; DefaultRunDir
	Logger        *slog.Logger
	// Ready is called once the mount is serving, with the record of the
	// serving process.
	Ready func(Worker)
}

// AllOptions gives the options back in -o form.
func (o ServeOptions) AllOptions() []string {
	var opts []string
	if o.ReadOnly {
		opts = append(opts, "ro")
	}
	if o.AllowOther {
		opts = append(opts, "allow_other")
	}
	return append(opts, o.KernelOptions...)
}

// Serve unwraps the share's master key, mounts the plaintext view and
// serves it until it is unmounted or ctx ends (then it unmounts). The keys
// are wiped before Serve returns, in every case.
func Serve(ctx context.Context, o ServeOptions) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := Acquire(o.RunDir, o.CipherDir, o.Mountpoint)
	if err != nil {
		return err
	}
	defer lock.Release()
	e, err := envelope.Read(o.CipherDir)
	if err != nil {
		return err
	}
	master, err := e.Unwrap(ctx, o.KMS)
	if err != nil {
		return fmt.Errorf("%s: %w", o.CipherDir, err)
	}
	core, err := cryptocore.New(master)
	master.Wipe()
	if err != nil {
		return err
	}
	defer core.Wipe()
	// The envelope's key check has vouched for the key; the tree can
	// still tell that the envelope was put on the wrong one. An empty
	// tree cannot, which is no reason to refuse it.
	if err := cryptfs.CheckKey(o.CipherDir, core); err != nil && !errors.Is(err, cryptfs.ErrKeyUnverified) {
		return err
	}
	root, err := cryptfs.NewRoot(cryptfs.Options{CipherDir: o.CipherDir, Core: core, ReadOnly: o.ReadOnly, Logger: log})
	if err != nil {
		return err
	}
	server, err := mount(o, root)
	if err != nil {
		return err
	}
	w, err := publish(lock, o)
	if err != nil {
		// Without a record, status cannot tell this worker from a dead
		// one; serve anyway, the lock still guards the share.
		log.Warn("no worker record; kmsagent status may not see this worker", "mountpoint", o.Mountpoint, "err", err)
	}
	log.Info("share mounted", "share", e.VolumeUUID, "cipher_dir", o.CipherDir, "mountpoint", o.Mountpoint, "read_only", o.ReadOnly)
	if o.Ready != nil {
		o.Ready(w)
	}
	stop := context.AfterFunc(ctx, func() {
		if server.Unmount() == nil {
			return
		}
		// Busy: detach it, so no mount is left behind, and serve the
		// open files until the last one is closed; then the kernel
		// ends the connection and Wait returns.
		if err := unmount(o.Mountpoint, true); err != nil {
			log.Warn("unmount on shutdown failed", "mountpoint", o.Mountpoint, "err", err)
			return
		}
		log.Info("share busy; detached, serving open files until they are closed", "share", e.VolumeUUID, "mountpoint", o.Mountpoint)
	})
	defer stop()
	server.Wait()
	log.Info("share unmounted; keys wiped", "share", e.VolumeUUID, "mountpoint", o.Mountpoint)
	return nil
}

// publish writes the record of this process, serving the mount just made
// on o.Mountpoint.
func publish(lock *Lock, o ServeOptions) (Worker, error) {
	w := Worker{PID: os.Getpid(), CipherDir: o.CipherDir, Mountpoint: o.Mountpoint}
	var err error
	if w.Start, err = processStart(w.PID); err != nil {
		return w, err
	}
	var st unix.Stat_t
	if err := unix.Stat(o.Mountpoint, &st); err != nil {
		return w, err
	}
	mounts, err := Mounts()
	if err != nil {
		return w, err
	}
	for _, m := range mounts {
		if m.Dev == st.Dev {
			w.MountID, w.Dev, w.Mountpoint = m.ID, m.Dev, m.Mountpoint
		}
	}
	if w.MountID == 0 {
		return w, fmt.Errorf("%s: the new mount is not in the mount table", o.Mountpoint)
	}
	return w, lock.Publish(w)
}

func mount(o ServeOptions, root gofs.InodeEmbedder) (*cryptfs.Server, error) {
	return cryptfs.Mount(o.Mountpoint, root, cryptfs.MountOptions{
		FsName:     o.CipherDir,
		AllowOther: o.AllowOther,
		ReadOnly:   o.ReadOnly,
		Options:    o.KernelOptions,
	})
}
