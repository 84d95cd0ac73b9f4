package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/kmsconn"
	"kmsagent/agent/secret"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
	"kmsagent/kmsclient"
)

// fuseWorkerCommand is the hidden command the mount command re-executes
// to serve a share in the background.
const fuseWorkerCommand = "fuse-worker"

// readyTimeout bounds how long mount waits for the worker: a KMS round
// trip with retries, plus the mount itself.
const readyTimeout = 2 * time.Minute

// openKMS opens the configured KMS provider.
func openKMS(ctx context.Context, env *cliEnv) (kmsclient.KMS, error) {
	cfg, err := loadConfig(env)
	if err != nil {
		return nil, err
	}
	return kmsconn.Open(ctx, cfg.KMS)
}

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
	kms, err := openKMS(ctx, env)
	if err != nil {
		return err
	}
	var e *envelope.Envelope
	if importFile != "" {
		raw, err := secret.ReadFile(importFile, 4096)
		if err != nil {
			return err
		}
		master, err := share.ParseMasterKey(raw.Bytes())
		raw.Wipe()
		if err != nil {
			return fmt.Errorf("%s: %w", importFile, err)
		}
		defer master.Wipe()
		e, err = share.Import(ctx, kms, dir, keyID, master, force)
		if errors.Is(err, cryptfs.ErrKeyUnverified) {
			return fmt.Errorf("%w; if you are sure the key is this tree's, pass --force", err)
		}
		if err != nil {
			return err
		}
	} else {
		e, err = share.Format(ctx, kms, dir, keyID, force)
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(env.stdout, "%s: share %s, master key wrapped by %s key %s\n", dir, e.VolumeUUID, e.KMS.Provider, e.KMS.KeyID)
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

// knownMountOptions are the -o options passed on to the kernel mount.
var knownMountOptions = []string{"default_permissions", "nosuid", "nodev", "noexec", "suid", "dev", "exec"}

func parseMountOptions(s string, o *share.ServeOptions) error {
	for _, opt := range strings.Split(s, ",") {
		switch opt {
		case "":
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "allow_other":
			o.AllowOther = true
		default:
			if !slices.Contains(knownMountOptions, opt) {
				return usagef("mount: unknown option -o %s; known: ro, rw, allow_other, %s", opt, strings.Join(knownMountOptions, ", "))
			}
			o.KernelOptions = append(o.KernelOptions, opt)
		}
	}
	return nil
}

func runMountFuse(ctx context.Context, env *cliEnv, args []string) error {
	var mf mountFlags
	pos, err := parseFlags(env, "mount fuse", "DIR MOUNTPOINT", args, 2, 2, mf.define)
	if err != nil {
		return err
	}
	if err := removeStaleMounts(env, pos[0], pos[1]); err != nil {
		return err
	}
	o, err := serveOptions(pos[0], pos[1], mf.options)
	if err != nil {
		return err
	}
	if mf.foreground {
		// A hangup closes the terminal the mount was served from.
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
		defer stop()
		return serveShare(ctx, env, o, func(share.Worker) {
			fmt.Fprintf(env.stderr, "kmsagent: %s mounted on %s; serving in the foreground\n", o.CipherDir, o.Mountpoint)
		}, func(string) {})
	}
	return startWorker(ctx, env, o, args[1:])
}

// serveOptions checks the directories before any KMS call, so a typo gets
// a clear error and no key is unwrapped.
func serveOptions(dir, mountpoint, options string) (share.ServeOptions, error) {
	o := share.ServeOptions{RunDir: share.DefaultRunDir}
	var err error
	if o.CipherDir, err = filepath.Abs(dir); err != nil {
		return o, err
	}
	if o.Mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return o, err
	}
	if err := parseMountOptions(options, &o); err != nil {
		return o, err
	}
	if _, err := envelope.Read(o.CipherDir); err != nil {
		return o, err
	}
	if err := share.CheckMountpoint(o.Mountpoint); err != nil {
		return o, err
	}
	fi, err := os.Stat(o.Mountpoint)
	if err != nil {
		return o, fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return o, fmt.Errorf("mount point %s is not a directory", o.Mountpoint)
	}
	if o.Mountpoint == o.CipherDir || strings.HasPrefix(o.Mountpoint, o.CipherDir+"/") {
		return o, fmt.Errorf("mount point %s is inside the cipher directory %s; mount somewhere else", o.Mountpoint, o.CipherDir)
	}
	if held, err := share.Held(o.RunDir, o.CipherDir); err == nil && held {
		// Acquire in the worker gives the full message; this saves a
		// KMS round trip.
		if _, err := share.Acquire(o.RunDir, o.CipherDir, ""); err != nil {
			return o, err
		}
	}
	return o, nil
}

// serveShare serves until unmounted or ctx ends, as the worker or in the
// foreground. Warnings go to the log and to warn.
func serveShare(ctx context.Context, env *cliEnv, o share.ServeOptions, ready func(share.Worker), warn func(string)) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(env.stderr, nil))
	}
	if err := hardenWorker(); err != nil {
		o.Logger.Warn(err.Error())
		warn(err.Error())
	}
	kms, err := openKMS(ctx, env)
	if err != nil {
		return err
	}
	o.KMS = kms
	o.Ready = ready
	return share.Serve(ctx, o)
}

// startWorker re-executes this binary as the worker, detached in its own
// session, and waits for it to report the mount ready or failed over a
// pipe.
func startWorker(ctx context.Context, env *cliEnv, o share.ServeOptions, args []string) error {
	wargs := []string{"-o", strings.Join(o.AllOptions(), ","), "--", o.CipherDir, o.Mountpoint}
	w, err := startWorkerProcess(env, "mount worker", fuseWorkerCommand, wargs, &syscall.SysProcAttr{Setsid: true})
	if err != nil {
		return err
	}
	if err := w.wait(ctx, readyTimeout, nil); err != nil {
		return err
	}
	w.cmd.Process.Release()
	return nil
}

// runFuseWorker serves one share for startWorker: status on fd 3, logs to
// syslog (the journal under systemd).
func runFuseWorker(ctx context.Context, env *cliEnv, args []string) error {
	status, err := openStatusPipe(fuseWorkerCommand, "kmsagent mount fuse")
	if err != nil {
		return err
	}
	// The worker has no terminal (it runs in its own session); a SIGHUP
	// is someone's "reload", and there is nothing to reload. Dying of it
	// would leave a dead mount. SIGINT and SIGTERM end ctx: unmount.
	signal.Ignore(syscall.SIGHUP)
	err = func() error {
		var mf mountFlags
		pos, err := parseFlags(env, fuseWorkerCommand, "DIR MOUNTPOINT", args, 2, 2, mf.define)
		if err != nil {
			return err
		}
		o, err := serveOptions(pos[0], pos[1], mf.options)
		if err != nil {
			return err
		}
		var closeLog func()
		o.Logger, closeLog = shareLogger(o.RunDir, o.CipherDir)
		defer closeLog()
		ready := func(w share.Worker) {
			if err := startReaper(w); err != nil {
				o.Logger.Warn("no reaper: if this worker dies, its mount stays until the next kmsagent mount or umount", "err", err)
			}
			status.done(nil)
		}
		return serveShare(ctx, env, o, ready, status.warn)
	}()
	if err != nil {
		status.done(err)
	}
	return err
}

// shareLogger logs to syslog (the journal under systemd), or where there
// is none (a container, a rescue shell) to the share's log file: tampered
// blocks must be reported somewhere an admin can find.
func shareLogger(runDir, cipherDir string) (*slog.Logger, func()) {
	if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "kmsagent-fuse"); err == nil {
		return slog.New(slog.NewTextHandler(sl, &slog.HandlerOptions{ReplaceAttr: dropTime})), func() { sl.Close() }
	}
	if f, err := share.OpenLog(runDir, cipherDir); err == nil {
		return slog.New(slog.NewTextHandler(f, nil)), func() { f.Close() }
	}
	return slog.New(slog.DiscardHandler), func() {}
}

// fuseReaperCommand is the hidden command of the reaper, which a worker
// starts once its mount is up: a process without keys that removes the
// mount if the worker ends without unmounting it. Nothing inside the
// worker can do that for every end: SIGKILL, and fatal runtime errors
// (an unrecovered panic in a go-fuse serving goroutine, a concurrent map
// write, out of memory), run no deferred function. What the reaper
// misses (it was killed too) the next mount, umount or status finds
// stale.
const fuseReaperCommand = "fuse-reaper"

// startReaper starts the reaper of w.
func startReaper(w share.Worker) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, fuseReaperCommand,
		"--pid", strconv.Itoa(w.PID), "--start", strconv.FormatUint(w.Start, 10),
		"--mount-id", strconv.Itoa(w.MountID), "--dev", strconv.FormatUint(w.Dev, 10),
		"--", w.CipherDir, w.Mountpoint)
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	go cmd.Wait()
	return nil
}

// runFuseReaper waits for its worker to end, then removes the worker's
// mount if it is still there.
func runFuseReaper(ctx context.Context, env *cliEnv, args []string) error {
	var w share.Worker
	pos, err := parseFlags(env, fuseReaperCommand, "CIPHER-DIR MOUNTPOINT", args, 2, 2, func(fs *flag.FlagSet) {
		fs.IntVar(&w.PID, "pid", 0, "worker process")
		fs.Uint64Var(&w.Start, "start", 0, "worker start time")
		fs.IntVar(&w.MountID, "mount-id", 0, "mount ID of the worker's mount")
		fs.Uint64Var(&w.Dev, "dev", 0, "device number of the worker's mount")
	})
	if err != nil {
		return err
	}
	w.CipherDir, w.Mountpoint = pos[0], pos[1]
	// It must outlive its worker: a hangup or an interrupt sent to the
	// worker's process group is the worker's to handle.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	log, closeLog := shareLogger(share.DefaultRunDir, w.CipherDir)
	defer closeLog()
	if err := waitProcess(w); err != nil {
		log.Error("reaper cannot watch its worker", "pid", w.PID, "err", err)
		return err
	}
	removed, err := share.Reap(share.DefaultRunDir, w)
	if err != nil {
		log.Error("worker ended without unmounting, and its mount could not be removed", "mountpoint", w.Mountpoint, "pid", w.PID, "err", err)
		return err
	}
	if removed {
		log.Warn("worker ended without unmounting; removed its mount", "mountpoint", w.Mountpoint, "pid", w.PID)
	}
	return nil
}

// waitProcess waits for w's process to exit (it may have already).
func waitProcess(w share.Worker) error {
	fd, err := unix.PidfdOpen(w.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	defer unix.Close(fd)
	// The PID is the worker's only while its start time matches.
	if w.Liveness() == share.Gone {
		return nil
	}
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// dropTime leaves the timestamp to syslog.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// runUmountShare unmounts the share mounted on mp, if there is one.
func runUmountShare(ctx context.Context, env *cliEnv, mp string, lazy bool) (found bool, err error) {
	m, err := share.FindMount(mp)
	if err != nil {
		return false, nil
	}
	st, err := share.Unmount(ctx, m, lazy)
	switch {
	case err != nil:
	case st == share.StateStale:
		fmt.Fprintf(env.stdout, "%s: removed a stale mount (its worker had died)\n", mp)
	case lazy:
		fmt.Fprintf(env.stdout, "%s: detached; its worker serves the files still open and exits, wiping its keys, once they are closed (see kmsagent status)\n", mp)
	}
	return true, err
}

// removeStaleMounts removes stale mounts of ours (their worker died) on
// the mount point or of the share, which would stand in the new mount's
// way.
func removeStaleMounts(env *cliEnv, dir, mountpoint string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return err
	}
	removed, err := share.RemoveStale(share.DefaultRunDir, mountpoint, dir)
	for _, m := range removed {
		fmt.Fprintf(env.stderr, "kmsagent: removed a stale mount of %s on %s (its worker had died)\n", m.CipherDir, m.Mountpoint)
	}
	return err
}

// runExportKeyShare prints a share's master key; runExportKey has checked
// the caller is root.
func runExportKeyShare(ctx context.Context, env *cliEnv, dir string) error {
	e, err := envelope.Read(dir)
	if err != nil {
		return err
	}
	kms, err := openKMS(ctx, env)
	if err != nil {
		return err
	}
	master, err := e.Unwrap(ctx, kms)
	if err != nil {
		return err
	}
	defer master.Wipe()
	fmt.Fprintf(env.stderr, "kmsagent: WARNING: printing the master key of share %s; anyone who sees it can read the share without the KMS\n", e.VolumeUUID)
	out := make([]byte, hex.EncodedLen(master.Len())+1)
	hex.Encode(out, master.Bytes())
	out[len(out)-1] = '\n'
	_, err = env.stdout.Write(out)
	clear(out)
	return err
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

// describeWorker says what a mount's worker is doing, and what to do
// about it.
func describeWorker(m share.MountStatus) string {
	switch m.State {
	case share.StateStale:
		return "stale: worker gone (run kmsagent umount " + m.Mountpoint + ")"
	case share.StateDetached:
		files := "files"
		if m.OpenFiles == 1 {
			files = "file"
		}
		if m.OpenFilesPartial {
			return fmt.Sprintf("detached: unmounting, at least %d open %s", m.OpenFiles, files)
		}
		return fmt.Sprintf("detached: unmounting, %d open %s", m.OpenFiles, files)
	case share.StateUnknown:
		return "unknown (run as root to check)"
	}
	return string(m.State)
}

func runStatus(ctx context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	if _, err := parseFlags(env, "status", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}); err != nil {
		return err
	}
	mounts, err := share.Status(share.DefaultRunDir)
	if err != nil {
		return err
	}
	out := []shareStatus{}
	for _, m := range mounts {
		s := shareStatus{Mountpoint: m.Mountpoint, CipherDir: m.CipherDir, Options: m.Options, State: string(m.State), Worker: describeWorker(m)}
		if m.Worker != nil {
			s.PID = m.Worker.PID
		}
		if m.State == share.StateDetached {
			s.OpenFiles = &m.OpenFiles
			s.OpenFilesPartial = m.OpenFilesPartial
		}
		if e, err := envelope.Read(m.CipherDir); err != nil {
			s.Error = err.Error()
		} else {
			s.Share, s.Provider, s.KeyID = e.VolumeUUID, e.KMS.Provider, e.KMS.KeyID
		}
		out = append(out, s)
	}
	// A host without device-mapper has no block volumes to show; that
	// is not an error for status.
	volumes := []crypt.Info{}
	if ctl, err := dm.Open(); err == nil {
		if vs, err := crypt.List(ctl); err == nil {
			volumes = vs
		}
		ctl.Close()
	}
	if asJSON {
		return writeJSON(env, struct {
			Shares  []shareStatus `json:"shares"`
			Volumes []crypt.Info  `json:"volumes"`
		}{out, volumes})
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.LUKSUUID, orDash(backing), orDash(strings.Join(v.Mountpoints, ",")), state)
		}
	}
	return tw.Flush()
}

// runRewrapShare re-wraps a share's master key under keyID; the data and
// the master key do not change.
func runRewrapShare(ctx context.Context, env *cliEnv, dir, keyID string) error {
	if _, err := envelope.Read(dir); err != nil {
		return err
	}
	kms, err := openKMS(ctx, env)
	if err != nil {
		return err
	}
	_, old, err := share.Rewrap(ctx, kms, dir, keyID)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: master key re-wrapped from %s to %s\n", dir, old, keyID)
	return nil
}
