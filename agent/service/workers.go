package service

import (
	"context"
	"fmt"
	"log/slog"
	"log/syslog"
	"os/exec"
	"strconv"

	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/fuse/share"
)

// This file is the workers' side: what the hidden commands run.

// ServeShare serves a share in this process until it is unmounted or ctx
// ends: the share worker's body, and kmsagent mount --foreground's.
// ready is called once the mount serves; warn gets the warnings, which
// are logged too.
func (s *Service) ServeShare(ctx context.Context, spec Spec, ready func(share.Worker), warn func(string)) error {
	if err := s.removeStaleMounts(spec); err != nil {
		return err
	}
	o, _, err := s.serveOptions(spec)
	if err != nil {
		return err
	}
	o.Logger = s.o.Logger
	return s.serve(ctx, o, ready, warn)
}

func (s *Service) serve(ctx context.Context, o share.ServeOptions, ready func(share.Worker), warn func(string)) error {
	if err := worker.Harden(); err != nil {
		o.Logger.Warn(err.Error())
		warn(err.Error())
	}
	kms, err := s.OpenKMS(ctx)
	if err != nil {
		return err
	}
	o.KMS = kms
	o.Ready = ready
	return share.Serve(ctx, o)
}

// RunShareWorker is the share worker started by Mount: it serves spec,
// reports to its parent over pipe and logs to syslog (the journal under
// systemd). Once the mount serves it starts a reaper.
func (s *Service) RunShareWorker(ctx context.Context, spec Spec, pipe *worker.Pipe) error {
	var cmk *worker.CMK
	err := func() error {
		// Started through the worker socket (for a confined daemon),
		// nobody has removed them; started as a child, mountShare
		// did, before its checks.
		if s.o.WorkerSocket != "" {
			if err := s.removeStaleMounts(spec); err != nil {
				return err
			}
		}
		o, e, err := s.serveOptions(spec)
		if err != nil {
			return err
		}
		cmk = &worker.CMK{Provider: e.KMS.Provider, KeyID: e.KMS.KeyID}
		var closeLog func()
		o.Logger, closeLog = ShareLogger(o.RunDir, o.CipherDir)
		defer closeLog()
		ready := func(w share.Worker) {
			if err := s.startReaper(w); err != nil {
				o.Logger.Warn("no reaper: if this worker dies, its mount stays until the next mount, unmount or status", "err", err)
			}
			pipe.Finish(ShareWorkerResult{UUID: e.VolumeUUID}, nil, cmk)
		}
		return s.serve(ctx, o, ready, pipe.Warn)
	}()
	if err != nil {
		pipe.Finish(nil, err, cmk)
	}
	return err
}

// RunUnlockWorker is the unlock worker: it unwraps the volume key through
// the KMS, loads the dm-crypt table with it, wipes it and exits.
func (s *Service) RunUnlockWorker(ctx context.Context, req crypt.UnlockRequest, pipe *worker.Pipe) error {
	if err := worker.Harden(); err != nil {
		pipe.Warn(err.Error())
	}
	err := func() error {
		kms, err := s.OpenKMS(ctx)
		if err != nil {
			return &crypt.StepError{Step: crypt.StepKMS, Err: err}
		}
		ctl, err := dm.Open()
		if err != nil {
			return err
		}
		defer ctl.Close()
		return crypt.Activate(ctx, ctl, kms, req, pipe.Step)
	}()
	pipe.Done(err, stepOf)
	return err
}

// ShareLogger logs to syslog (the journal under systemd), or where there
// is none (a container, a rescue shell) to the share's log file: tampered
// blocks must be reported somewhere an admin can find.
func ShareLogger(runDir, cipherDir string) (*slog.Logger, func()) {
	if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "kmsagent-fuse"); err == nil {
		return slog.New(slog.NewTextHandler(sl, &slog.HandlerOptions{ReplaceAttr: dropTime})), func() { sl.Close() }
	}
	if f, err := share.OpenLog(runDir, cipherDir); err == nil {
		return slog.New(slog.NewTextHandler(f, nil)), func() { f.Close() }
	}
	return slog.New(slog.DiscardHandler), func() {}
}

// dropTime leaves the timestamp to syslog.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// The reaper is a process without keys that a share worker starts once
// its mount is up, and that removes the mount if the worker ends without
// unmounting it. Nothing inside the worker can do that for every end:
// SIGKILL, and fatal runtime errors (an unrecovered panic in a go-fuse
// serving goroutine, a concurrent map write, out of memory), run no
// deferred function. What the reaper misses (it was killed too) the next
// mount, unmount or status finds stale.

// startReaper starts the reaper of w.
func (s *Service) startReaper(w share.Worker) error {
	args := []string{ReaperCommand}
	if s.o.RunDir != share.DefaultRunDir {
		args = append(args, "--run-dir", s.o.RunDir)
	}
	args = append(args, "--pid", strconv.Itoa(w.PID), "--start", strconv.FormatUint(w.Start, 10),
		"--mount-id", strconv.Itoa(w.MountID), "--dev", strconv.FormatUint(w.Dev, 10),
		"--", w.CipherDir, w.Mountpoint)
	if s.o.WorkerSocket != "" {
		p, err := worker.Start(worker.Command{What: "reaper", Args: args, Socket: s.o.WorkerSocket})
		if err != nil {
			return err
		}
		p.Release()
		return nil
	}
	cmd := exec.Command(s.o.Executable, args...)
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	go cmd.Wait()
	return nil
}

// RunReaper waits for the worker w to end, then removes its mount if it
// is still there.
func RunReaper(ctx context.Context, runDir string, w share.Worker) error {
	log, closeLog := ShareLogger(runDir, w.CipherDir)
	defer closeLog()
	if err := worker.Watch(ctx, w.PID, func() bool { return w.Liveness() != share.Gone }); err != nil {
		log.Error("reaper cannot watch its worker", "pid", w.PID, "err", err)
		return err
	}
	removed, err := share.Reap(runDir, w)
	if err != nil {
		log.Error("worker ended without unmounting, and its mount could not be removed", "mountpoint", w.Mountpoint, "pid", w.PID, "err", err)
		return err
	}
	if removed {
		log.Warn("worker ended without unmounting; removed its mount", "mountpoint", w.Mountpoint, "pid", w.PID)
	}
	return nil
}
