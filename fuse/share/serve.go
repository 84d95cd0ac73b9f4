package share

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	cryptfs "kmsagent/fuse/fs"
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
	// Ready is called once the mount is serving.
	Ready func()
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
	log.Info("share mounted", "share", e.VolumeUUID, "cipher_dir", o.CipherDir, "mountpoint", o.Mountpoint, "read_only", o.ReadOnly)
	if o.Ready != nil {
		o.Ready()
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

func mount(o ServeOptions, root gofs.InodeEmbedder) (*cryptfs.Server, error) {
	return cryptfs.Mount(o.Mountpoint, root, cryptfs.MountOptions{
		FsName:     o.CipherDir,
		AllowOther: o.AllowOther,
		ReadOnly:   o.ReadOnly,
		Options:    o.KernelOptions,
	})
}
