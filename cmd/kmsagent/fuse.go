package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"kmsagent/agent/control"
	"kmsagent/agent/service"
	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
	"kmsagent/fuse/share"
)

// fuseWorkerCommand is the hidden command the mount command re-executes
// to serve a share in the background.
const fuseWorkerCommand = service.ShareWorkerCommand

func runFormatFuse(ctx context.Context, env *cliEnv, args []string) error {
	var keyID, importFile string
	var force bool
	pos, err := parseFlags(env, "format fuse", "DIR", args, 1, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the share's master key")
		fs.BoolVar(&force, "force", false, "format a non-empty directory or replace an envelope (nothing is overwritten; the old envelope is kept as a backup); with --import-master-key-file, adopt a tree too empty to check the key against (a key the tree shows wrong is refused still)")
		fs.StringVar(&importFile, "import-master-key-file", "", "adopt an existing gocryptfs directory whose master key (hex) is in FILE")
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("format fuse: --key-id is required")
	}
	dir := pos[0]
	svc, err := newService(env)
	if err != nil {
		return err
	}
	e, err := svc.Format(ctx, service.FormatOptions{Kind: service.KindShare, Source: dir, KeyID: keyID, Force: force, MasterKeyFile: importFile})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: share %s, master key wrapped by %s key %s\n", dir, e.UUID, e.Provider, e.KeyID)
	return nil
}

// mountFlags are the options of mount fuse and of the worker.
type mountFlags struct {
	options    string
	foreground bool
}

func (m *mountFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&m.options, "o", "", "mount options: ro, rw, allow_other, default_permissions, nosuid, nodev, noexec, suid, dev, exec")
	fs.BoolVar(&m.foreground, "foreground", false, "serve in the foreground until unmounted or interrupted (for debugging)")
}

func (m *mountFlags) spec(pos []string) service.Spec {
	return service.Spec{Kind: service.KindShare, Source: pos[0], Target: pos[1], Options: strings.Split(m.options, ",")}
}

func runMountFuse(ctx context.Context, env *cliEnv, args []string) error {
	var mf mountFlags
	pos, err := parseFlags(env, "mount fuse", "DIR MOUNTPOINT", args, 2, 2, mf.define)
	if err != nil {
		return err
	}
	if !mf.foreground {
		svc, err := newService(env)
		if err != nil {
			return err
		}
		_, err = svc.Mount(ctx, mf.spec(pos))
		return err
	}
	// Logs go to the terminal the mount is served from, and a hangup
	// closes it.
	svc, err := newServiceLogger(env, slog.New(slog.NewTextHandler(env.stderr, nil)))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	return svc.ServeShare(ctx, mf.spec(pos), func(w share.Worker) {
		fmt.Fprintf(env.stderr, "kmsagent: %s mounted on %s; serving in the foreground\n", w.CipherDir, w.Mountpoint)
	}, func(string) {})
}

// runFuseWorker is the share worker the mount starts: status on fd 3,
// logs to syslog.
func runFuseWorker(ctx context.Context, env *cliEnv, args []string) error {
	pipe, err := worker.OpenPipe()
	if err != nil {
		return fmt.Errorf("%s is started by kmsagent mount fuse", fuseWorkerCommand)
	}
	// The worker has no terminal (it runs in its own session); a SIGHUP
	// is someone's "reload", and there is nothing to reload. Dying of it
	// would leave a dead mount. SIGINT and SIGTERM end ctx: unmount.
	signal.Ignore(syscall.SIGHUP)
	var mf mountFlags
	runDir := share.DefaultRunDir
	kmsAttempts := 0
	var workerSocket string
	pos, err := parseFlags(env, fuseWorkerCommand, "DIR MOUNTPOINT", args, 2, 2, func(fs *flag.FlagSet) {
		mf.define(fs)
		fs.StringVar(&runDir, "run-dir", runDir, "mount locks and worker records")
		fs.IntVar(&kmsAttempts, "kms-attempts", 0, "tries of a throttled or unavailable KMS call (0: the default)")
		fs.StringVar(&workerSocket, "worker-socket", "", "start the reaper through this worker socket")
	})
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	o := workerOptions(env, nil, runDir, kmsAttempts)
	o.WorkerSocket = workerSocket
	svc, err := service.New(o)
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	return svc.RunShareWorker(ctx, mf.spec(pos), pipe)
}

// fuseReaperCommand is the hidden command of the reaper (see
// service.RunReaper).
const fuseReaperCommand = service.ReaperCommand

func runFuseReaper(ctx context.Context, env *cliEnv, args []string) error {
	var w share.Worker
	runDir := share.DefaultRunDir
	pos, err := parseFlags(env, fuseReaperCommand, "CIPHER-DIR MOUNTPOINT", args, 2, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&runDir, "run-dir", runDir, "mount locks and worker records")
		fs.IntVar(&w.PID, "pid", 0, "worker process")
		fs.Uint64Var(&w.Start, "start", 0, "worker start time")
		fs.IntVar(&w.MountID, "mount-id", 0, "mount ID of the worker's mount")
		fs.Uint64Var(&w.Dev, "dev", 0, "device number of the worker's mount")
	})
	if err != nil {
		return err
	}
	w.CipherDir, w.Mountpoint = pos[0], pos[1]
	// It must outlive its worker: a hangup, an interrupt or a
	// termination sent to the worker's process group is the worker's to
	// handle.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	return service.RunReaper(context.WithoutCancel(ctx), runDir, w)
}

// shareStatus is one line of status --json.
type shareStatus struct {
	Mountpoint string `json:"mountpoint"`
	CipherDir  string `json:"cipher_dir"`
	Options    string `json:"options"`
	Share      string `json:"share,omitempty"`
	Provider   string `json:"kms_provider,omitempty"`
	KeyID      string `json:"kms_key_id,omitempty"`
	// State is running, stale, detached or unknown (share.State).
	State     string `json:"state"`
	Worker    string `json:"worker"` // State in words, with what to do
	PID       int    `json:"worker_pid,omitempty"`
	OpenFiles *int   `json:"open_files,omitempty"` // detached only
	// OpenFilesPartial: some processes' files could not be seen.
	OpenFilesPartial bool   `json:"open_files_partial,omitempty"`
	Error            string `json:"error,omitempty"`
}

// describeWorker says what a share's worker is doing, and what to do
// about it.
func describeWorker(v service.VolumeStatus) string {
	switch v.State {
	case service.StateStale:
		return "stale: worker gone (run kmsagent umount " + v.Target + ")"
	case service.StateDetached:
		files := "files"
		if v.OpenFiles == 1 {
			files = "file"
		}
		if v.OpenFilesPartial {
			return fmt.Sprintf("detached: unmounting, at least %d open %s", v.OpenFiles, files)
		}
		return fmt.Sprintf("detached: unmounting, %d open %s", v.OpenFiles, files)
	case service.StateUnknown:
		return "unknown (run as root to check)"
	}
	return string(shareState(v.State))
}

// shareState is a share's state as status has always named it.
func shareState(st service.State) share.State {
	switch st {
	case service.StateMounted:
		return share.StateRunning
	case service.StateStale:
		return share.StateStale
	case service.StateDetached:
		return share.StateDetached
	}
	return share.StateUnknown
}

// volumeStatus is a block volume as status shows it: the kernel's view,
// and who opened it when kmsagent did not.
type volumeStatus struct {
	crypt.Info
	UnlockedBy string `json:"unlocked_by,omitempty"`
}

func runStatus(ctx context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	if _, err := parseFlags(env, "status", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}); err != nil {
		return err
	}
	var managed *control.StatusReply
	if c := connectDaemon(ctx, env); c != nil {
		st, err := c.Status(ctx)
		c.Close()
		if err == nil {
			managed = &st
		}
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	all, err := svc.Status(ctx)
	if err != nil {
		return err
	}
	out := []shareStatus{}
	volumes := []volumeStatus{}
	for _, v := range all {
		if v.Kind == service.KindLUKS {
			volumes = append(volumes, volumeStatus{Info: *v.Block, UnlockedBy: v.UnlockedBy})
			continue
		}
		s := shareStatus{Mountpoint: v.Target, CipherDir: v.Source, Options: v.Options, State: string(shareState(v.State)), Worker: describeWorker(v),
			PID: v.WorkerPID, Share: v.UUID, Provider: v.Provider, KeyID: v.KeyID}
		if v.Err != nil {
			s.Error = advise(nil, v.Err).Error()
		}
		if v.State == service.StateDetached {
			s.OpenFiles = &v.OpenFiles
			s.OpenFilesPartial = v.OpenFilesPartial
		}
		out = append(out, s)
	}
	if asJSON {
		return writeJSON(env, struct {
			Shares  []shareStatus        `json:"shares"`
			Volumes []volumeStatus       `json:"volumes"`
			Daemon  *control.StatusReply `json:"daemon,omitempty"` // when kmsagent run answers
		}{out, volumes, managed})
	}
	if managed != nil {
		printDaemonVolumes(env, *managed)
	}
	if len(out) == 0 && len(volumes) == 0 {
		fmt.Fprintln(env.stdout, "no shares mounted, no volumes open")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	if len(out) > 0 {
		fmt.Fprintln(tw, "SHARE MOUNTPOINT\tCIPHER DIR\tSHARE\tKMS KEY\tWORKER")
		for _, s := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Mountpoint, s.CipherDir, orDash(s.Share), orDash(s.Provider+":"+s.KeyID), s.Worker)
		}
	}
	if len(volumes) > 0 {
		if len(out) > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw, "VOLUME\tLUKS UUID\tBACKING\tMOUNTPOINTS\tSTATE")
		for _, v := range volumes {
			backing := v.Backing
			if v.BackingFile != "" {
				backing += " (" + v.BackingFile + ")"
			}
			state := "open"
			if v.ReadOnly {
				state += ", read-only"
			}
			if v.Deferred {
				state += ", removal deferred until unused"
			}
			if v.UnlockedBy != "" {
				state += ", unlocked by " + v.UnlockedBy
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.LUKSUUID, orDash(backing), orDash(strings.Join(v.Mountpoints, ",")), state)
		}
	}
	return tw.Flush()
}
