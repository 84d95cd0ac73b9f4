package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
)

// Hidden commands of the kmsagent binary that run the workers. The
// binary must dispatch them to RunShareWorker, RunUnlockWorker and
// RunReaper.
const (
	ShareWorkerCommand  = "fuse-worker"
	UnlockWorkerCommand = "luks-worker"
	ReaperCommand       = "fuse-reaper"
)

// readyTimeout bounds how long Mount waits for a worker: a KMS round trip
// with retries, plus the table load or the mount itself.
const readyTimeout = 2 * time.Minute

// Mounted is a volume Mount mounted.
type Mounted struct {
	Spec
	// WorkerPID is the share's worker, which serves the mount; 0 for
	// LUKS, whose unlock worker has exited.
	WorkerPID int
	// Device is a LUKS volume's /dev/mapper device.
	Device string
	// Loop is the loop device an image file was attached to.
	Loop string
	// UUID is the share's or the LUKS volume's UUID.
	UUID            string
	KeyID, Provider string
	Since           time.Time
	// Exited is closed when the share's worker, a child of this process,
	// exits (it has unmounted, or died); nil for LUKS. The child is
	// reaped either way; a caller that restarts adopts the worker with
	// worker.Watch instead.
	Exited <-chan struct{} `json:"-"`
}

// Mount mounts a share (it returns once the worker serves the mount) or
// opens a LUKS volume and mounts its file system if spec has a Target.
// When it fails after the key use was attempted, the Mounted it returns
// with the error holds the CMK (KeyID, Provider), for an audit record.
func (s *Service) Mount(ctx context.Context, spec Spec) (Mounted, error) {
	return s.MountWithProgress(ctx, spec, nil)
}

// MountWithProgress is Mount; progress, when not nil, is called at the
// start of each step of opening a LUKS volume, and with "" at the end.
func (s *Service) MountWithProgress(ctx context.Context, spec Spec, progress func(step string)) (Mounted, error) {
	if s.o.Confined {
		if spec.Kind == KindShare {
			return s.mountShareConfined(ctx, spec)
		}
		return s.mountConfined(ctx, spec, progress)
	}
	src, err := resolveSource(ctx, spec.Source)
	if err != nil {
		return Mounted{}, err
	}
	spec.Source = src
	spec.Kind = kindOf(spec.Kind, spec.Source)
	if spec.Kind == KindShare {
		return s.mountShare(ctx, spec)
	}
	return s.mountLUKS(ctx, spec, progress)
}

// OptionError is a mount option a share does not take.
type OptionError struct {
	Option string
	Known  []string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("unknown mount option %s; known: %s", e.Option, strings.Join(e.Known, ", "))
}

// shareKernelOptions are the options passed on to the kernel mount.
var shareKernelOptions = []string{"default_permissions", "nosuid", "nodev", "noexec", "suid", "dev", "exec"}

// CheckShareOption reports whether a share mount takes the -o option o
// (mount.kmsagent drops the ones it does not under mount -s).
func CheckShareOption(o string) error {
	return parseShareOptions([]string{o}, new(share.ServeOptions))
}

func parseShareOptions(opts []string, o *share.ServeOptions) error {
	for _, opt := range opts {
		switch opt {
		case "":
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "allow_other":
			o.AllowOther = true
		default:
			if !slices.Contains(shareKernelOptions, opt) {
				return &OptionError{Option: opt, Known: append([]string{"ro", "rw", "allow_other"}, shareKernelOptions...)}
			}
			o.KernelOptions = append(o.KernelOptions, opt)
		}
	}
	return nil
}

// serveOptions checks a share's directories before any KMS call, so a
// typo gets a clear error and no key is unwrapped.
func (s *Service) serveOptions(spec Spec) (share.ServeOptions, *envelope.Envelope, error) {
	o := share.ServeOptions{RunDir: s.o.RunDir}
	var err error
	if o.CipherDir, err = filepath.Abs(spec.Source); err != nil {
		return o, nil, err
	}
	if o.Mountpoint, err = filepath.Abs(spec.Target); err != nil {
		return o, nil, err
	}
	if err := parseShareOptions(spec.Options, &o); err != nil {
		return o, nil, err
	}
	if spec.ReadOnly {
		o.ReadOnly = true
	}
	// A directory that is not there is not "not a share" (whose
	// advice is to format it): its file system may not be mounted.
	if _, err := os.Stat(o.CipherDir); errors.Is(err, fs.ErrNotExist) {
		return o, nil, fmt.Errorf("cipher directory: %w", err)
	}
	e, err := envelope.Read(o.CipherDir)
	if err != nil {
		return o, nil, err
	}
	if err := share.CheckMountpoint(o.Mountpoint); err != nil {
		return o, nil, err
	}
	fi, err := os.Stat(o.Mountpoint)
	if err != nil {
		return o, nil, fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return o, nil, fmt.Errorf("mount point %s is not a directory", o.Mountpoint)
	}
	if o.Mountpoint == o.CipherDir || strings.HasPrefix(o.Mountpoint, o.CipherDir+"/") {
		return o, nil, fmt.Errorf("mount point %s is inside the cipher directory %s; mount somewhere else", o.Mountpoint, o.CipherDir)
	}
	if held, err := share.Held(o.RunDir, o.CipherDir); err == nil && held {
		// Acquire in the worker gives the full message; this saves a
		// KMS round trip.
		if _, err := share.Acquire(o.RunDir, o.CipherDir, ""); err != nil {
			return o, nil, err
		}
	}
	return o, e, nil
}

// removeStaleMounts removes stale mounts of ours (their worker died) on
// the mount point or of the share, which would stand in the new mount's
// way.
func (s *Service) removeStaleMounts(spec Spec) error {
	dir, err := filepath.Abs(spec.Source)
	if err != nil {
		return err
	}
	mountpoint, err := filepath.Abs(spec.Target)
	if err != nil {
		return err
	}
	removed, err := share.RemoveStale(s.o.RunDir, mountpoint, dir)
	for _, m := range removed {
		s.notify(Note{Message: fmt.Sprintf("removed a stale mount of %s on %s (its worker had died)", m.CipherDir, m.Mountpoint)})
	}
	return err
}

// mountShare starts the share's worker, detached in its own session so
// the mount outlives the caller, and waits for it to report the mount
// ready or failed.
func (s *Service) mountShare(ctx context.Context, spec Spec) (Mounted, error) {
	if err := s.removeStaleMounts(spec); err != nil {
		return Mounted{}, err
	}
	o, e, err := s.serveOptions(spec)
	if err != nil {
		return Mounted{}, err
	}
	// From here on a failure is a key use that failed: its CMK is
	// known, for the caller's audit record.
	return s.startShareWorker(ctx, spec, o, &worker.CMK{Provider: e.KMS.Provider, KeyID: e.KMS.KeyID}, e.VolumeUUID)
}

// mountShareConfined is mountShare for a confined service: the share's
// directories are the host's, which this process may not see (PrivateTmp=
// hides /tmp), so the worker, started through the worker socket in the
// host's namespace, checks them and removes stale mounts itself, and
// names the CMK and the share's UUID in its answer. One process fewer
// than a service worker that would start the share worker.
func (s *Service) mountShareConfined(ctx context.Context, spec Spec) (Mounted, error) {
	o := share.ServeOptions{RunDir: s.o.RunDir}
	var err error
	if o.CipherDir, err = filepath.Abs(spec.Source); err != nil {
		return Mounted{}, err
	}
	if o.Mountpoint, err = filepath.Abs(spec.Target); err != nil {
		return Mounted{}, err
	}
	if err := parseShareOptions(spec.Options, &o); err != nil {
		return Mounted{}, err
	}
	if spec.ReadOnly {
		o.ReadOnly = true
	}
	return s.startShareWorker(ctx, spec, o, nil, "")
}

// startShareWorker starts the worker serving o and waits for it. cmk and
// uuid are the share's, when known already; else the worker names them.
func (s *Service) startShareWorker(ctx context.Context, spec Spec, o share.ServeOptions, cmk *worker.CMK, uuid string) (Mounted, error) {
	var args []string
	if s.o.RunDir != share.DefaultRunDir {
		args = append(args, "--run-dir", s.o.RunDir)
	}
	if s.o.WorkerSocket != "" {
		// Its reaper goes the same way: a unit of its own, not a
		// process left behind in the worker's when it stops.
		args = append(args, "--worker-socket", s.o.WorkerSocket)
	}
	args = s.workerArgs(ShareWorkerCommand, append(args, "-o", strings.Join(o.AllOptions(), ","), "--", o.CipherDir, o.Mountpoint)...)
	failed := func(err error) (Mounted, error) {
		if cmk == nil {
			return Mounted{}, err
		}
		return Mounted{KeyID: cmk.KeyID, Provider: cmk.Provider}, err
	}
	p, err := worker.Start(worker.Command{What: "mount worker", Executable: s.o.Executable, Args: args, Detach: true, Socket: s.o.WorkerSocket})
	if err != nil {
		return failed(err)
	}
	ready, err := p.WaitReady(ctx, readyTimeout, s.workerMessage)
	if ready.CMK != nil {
		cmk = ready.CMK
	}
	var res ShareWorkerResult
	if len(ready.Result) > 0 && json.Unmarshal(ready.Result, &res) == nil && uuid == "" {
		uuid = res.UUID
	}
	if err != nil {
		return failed(err)
	}
	spec.Source, spec.Target = o.CipherDir, o.Mountpoint
	pid := ready.PID
	if pid == 0 {
		pid = p.PID()
	}
	m := Mounted{Spec: spec, WorkerPID: pid, UUID: uuid, Since: time.Now(), Exited: p.Done()}
	if cmk != nil {
		m.KeyID, m.Provider = cmk.KeyID, cmk.Provider
	}
	return m, nil
}

// ShareWorkerResult is what a share worker reports with ready.
type ShareWorkerResult struct {
	UUID string `json:"uuid,omitempty"`
}

// workerArgs is the command line of a worker after the binary's name.
func (s *Service) workerArgs(command string, args ...string) []string {
	var out []string
	if p := s.configPath(); p != "" {
		out = append(out, "--config", p)
	}
	out = append(out, command)
	if s.o.KMSAttempts > 0 {
		out = append(out, "--kms-attempts", strconv.Itoa(s.o.KMSAttempts))
	}
	return append(out, args...)
}

// workerMessage passes a worker's warnings on.
func (s *Service) workerMessage(m worker.Message) {
	if m.Warning != "" {
		s.notify(Note{Warning: true, Message: m.Warning})
	}
}

// mountLUKS opens a LUKS volume, its key unwrapped and loaded by an
// unlock worker, and mounts its file system when spec has a Target.
func (s *Service) mountLUKS(ctx context.Context, spec Spec, progress func(string)) (Mounted, error) {
	if progress == nil {
		progress = func(string) {}
	}
	o := crypt.Options{Name: spec.Name, Mountpoint: spec.Target, FSType: spec.FSType,
		MountOptions: strings.Join(spec.Options, ","), ReadOnly: spec.ReadOnly, AllowDiscards: spec.Discard, Progress: progress}
	// Argument mistakes first: they should not be hidden behind a
	// missing device-mapper.
	if spec.Name != "" {
		if err := dm.ValidateName(spec.Name); err != nil {
			return Mounted{}, err
		}
	}
	if _, err := os.Stat(spec.Source); err != nil {
		return Mounted{}, fmt.Errorf("device: %w", err)
	}
	ctl, err := dm.Open()
	if err != nil {
		return Mounted{}, err
	}
	defer ctl.Close()
	unlock := func(ctx context.Context, req crypt.UnlockRequest) error {
		return s.unlock(ctx, req, progress)
	}
	v, err := crypt.Open(ctx, ctl, spec.Source, o, unlock)
	progress("")
	provider, keyID := luksKeyRef(spec.Source)
	if err != nil {
		// The CMK its token names, for the caller's audit record.
		return Mounted{KeyID: keyID, Provider: provider}, err
	}
	spec.Name, spec.FSType = v.Name, v.FSType
	return Mounted{Spec: spec, Device: v.Device, Loop: v.Loop, UUID: v.LUKSUUID, Provider: provider, KeyID: keyID, Since: time.Now()}, nil
}

// unlock runs the unlock worker for req and waits for it to finish and
// exit; its steps go to progress. The worker dies with this process, so
// an interrupted mount cannot finish behind its back.
func (s *Service) unlock(ctx context.Context, req crypt.UnlockRequest, progress func(string)) error {
	args := []string{"--name", req.Name}
	if req.ReadOnly {
		args = append(args, "--read-only")
	}
	if req.AllowDiscards {
		args = append(args, "--discard")
	}
	args = append(args, "--", req.Device)
	p, err := worker.Start(worker.Command{What: "unlock worker", Executable: s.o.Executable, Args: s.workerArgs(UnlockWorkerCommand, args...), Socket: s.o.WorkerSocket})
	if err != nil {
		return err
	}
	_, err = p.WaitReady(ctx, readyTimeout, func(m worker.Message) {
		s.workerMessage(m)
		if m.Step != "" {
			progress(m.Step)
		}
	})
	if err == nil {
		// Ready is its last word; wait for it to be gone, key and all.
		<-p.Done()
		return nil
	}
	var we *worker.Error
	var died *worker.DiedError
	switch {
	case errors.As(err, &we) && we.Step != "":
		return &crypt.StepError{Step: we.Step, Err: we}
	case errors.As(err, &died) && died.Step != "":
		return &crypt.StepError{Step: died.Step, Err: err}
	}
	return err
}

// stepOf splits a crypt.StepError for the status pipe.
func stepOf(err error) (string, error) {
	var se *crypt.StepError
	if errors.As(err, &se) {
		return se.Step, se.Err
	}
	return "", err
}

// NotMountedError is a target that is neither a mount of ours nor an
// open volume.
type NotMountedError struct{ Target string }

func (e *NotMountedError) Error() string {
	return e.Target + " is not a kmsagent mount or volume"
}

// Unmounted is what Close did.
type Unmounted struct {
	Kind   Kind
	Target string // the share's mount point or the LUKS volume's dm name
	// Share:
	Stale    bool // the worker had died; its mount was removed
	Detached bool // lazily: the worker exits once the open files are closed
	// LUKS:
	Mountpoints  []string // file systems unmounted
	Deferred     bool     // still in use: removal deferred until the last user closes it
	Loop         string   // the image's loop device
	LoopDetached bool
}

// Unmount unmounts a share or closes a LUKS volume; target is a mount
// point, a device-mapper name or a share's cipher directory.
func (s *Service) Unmount(ctx context.Context, target string, lazy bool) error {
	_, err := s.Close(ctx, target, lazy)
	return err
}

// Close is Unmount, reporting what it did.
func (s *Service) Close(ctx context.Context, target string, lazy bool) (Unmounted, error) {
	if s.o.Confined {
		return s.closeConfined(ctx, target, lazy)
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return Unmounted{}, err
	}
	m, err := share.FindMount(abs)
	if err != nil {
		// A cipher directory names its mount.
		if ms, err2 := share.Mounts(); err2 == nil {
			for _, c := range ms {
				if c.CipherDir == abs {
					m, err = c, nil
					break
				}
			}
		}
	}
	if err == nil {
		st, err := share.Unmount(ctx, s.o.RunDir, m, lazy)
		return Unmounted{Kind: KindShare, Target: m.Mountpoint, Stale: st == share.StateStale, Detached: lazy && st != share.StateStale}, err
	}
	notOurs := &NotMountedError{Target: target}
	ctl, err := dm.Open()
	if err != nil {
		return Unmounted{}, notOurs
	}
	defer ctl.Close()
	name, ok, err := crypt.Resolve(ctl, target)
	if err != nil {
		return Unmounted{}, err
	}
	if !ok {
		// The volume's source: its backing device or image file.
		if infos, err := crypt.List(ctl); err == nil {
			for _, info := range infos {
				if info.Backing == abs || (info.BackingFile != "" && info.BackingFile == abs) {
					name, ok = info.Name, true
					break
				}
			}
		}
	}
	if !ok {
		return Unmounted{}, notOurs
	}
	res, err := crypt.Close(ctx, ctl, name, crypt.CloseOptions{Lazy: lazy})
	return Unmounted{Kind: KindLUKS, Target: name, Mountpoints: res.Unmounted, Deferred: res.Deferred, Loop: res.Loop, LoopDetached: res.LoopDetached}, err
}
