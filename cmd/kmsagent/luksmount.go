package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
)

// luksWorkerCommand is the hidden command that unlocks one block volume:
// the only process that holds its key, for the moment it takes to load
// the dm-crypt table.
const luksWorkerCommand = "luks-worker"

// unlockTimeout bounds the unlock worker: a KMS round trip with retries,
// the keyslot and the table load.
const unlockTimeout = 2 * time.Minute

// luksFlags are the options of mount luks that the worker needs too.
type luksFlags struct {
	name     string
	readOnly bool
	discard  bool
}

func (l *luksFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&l.name, "name", "", "device-mapper name (default kmsagent-<first 8 hex digits of the LUKS uuid>)")
	fs.BoolVar(&l.readOnly, "read-only", false, "map and mount the volume read-only")
	fs.BoolVar(&l.discard, "discard", false, "pass discards (TRIM) to the device; this reveals which blocks are free")
}

func runMountLuks(ctx context.Context, env *cliEnv, args []string) error {
	var lf luksFlags
	var fsType, options string
	var verbose bool
	pos, err := parseFlags(env, "mount luks", "DEVICE|FILE [MOUNTPOINT]", args, 1, 2, func(fs *flag.FlagSet) {
		lf.define(fs)
		fs.StringVar(&fsType, "fs-type", "", "file system type (default: detected from the superblock)")
		fs.StringVar(&options, "o", "", "mount options, as for mount(8)")
		fs.BoolVar(&verbose, "verbose", false, "print the time each step took")
	})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("mount luks needs root (device-mapper, loop devices, mount)")
	}
	o := crypt.Options{Name: lf.name, FSType: fsType, MountOptions: options, ReadOnly: lf.readOnly, AllowDiscards: lf.discard}
	if len(pos) == 2 {
		o.Mountpoint = pos[1]
	} else if fsType != "" || options != "" {
		return usagef("mount luks: --fs-type and -o need a MOUNTPOINT")
	}
	// Argument mistakes first: they should not be hidden behind a
	// missing device-mapper.
	if lf.name != "" {
		if err := dm.ValidateName(lf.name); err != nil {
			return err
		}
	}
	if _, err := os.Stat(pos[0]); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	ctl, err := dm.Open()
	if err != nil {
		return err
	}
	defer ctl.Close()
	steps := &stepClock{}
	o.Progress = steps.mark
	unlock := func(ctx context.Context, req crypt.UnlockRequest) error {
		return runUnlockWorker(ctx, env, req, steps.mark)
	}
	v, err := crypt.Open(ctx, ctl, pos[0], o, unlock)
	steps.mark("")
	if verbose {
		fmt.Fprintf(env.stderr, "kmsagent: %s\n", steps)
	}
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%s: volume %s opened", v.Device, v.LUKSUUID)
	if v.Loop != "" {
		msg += " (image on " + v.Loop + ")"
	}
	if v.Mountpoint != "" {
		msg += fmt.Sprintf(", %s mounted on %s", v.FSType, v.Mountpoint)
	}
	fmt.Fprintln(env.stdout, msg)
	return nil
}

// runUnlockWorker runs the unlock worker for req and waits for it to
// finish; its steps go to onStep. The worker dies with this process
// (Pdeathsig), so an interrupted mount cannot finish behind its back.
func runUnlockWorker(ctx context.Context, env *cliEnv, req crypt.UnlockRequest, onStep func(string)) error {
	args := []string{"--name", req.Name}
	if req.ReadOnly {
		args = append(args, "--read-only")
	}
	if req.AllowDiscards {
		args = append(args, "--discard")
	}
	args = append(args, "--", req.Device)
	w, err := startWorkerProcess(env, "unlock worker", luksWorkerCommand, args, &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL})
	if err != nil {
		return err
	}
	var last string
	err = w.wait(ctx, unlockTimeout, func(s string) { last = s; onStep(s) })
	if err == nil {
		// Ready is its last word; wait for it to be gone, key and all.
		<-w.exited
		return nil
	}
	var died *workerDiedError
	if errors.As(err, &died) && last != "" {
		return &crypt.StepError{Step: last, Err: err}
	}
	// The worker's message starts with the step that failed.
	for _, s := range crypt.Steps {
		if rest, ok := strings.CutPrefix(err.Error(), s+": "); ok {
			return &crypt.StepError{Step: s, Err: errors.New(rest)}
		}
	}
	return err
}

// runLuksWorker is the unlock worker: it unwraps the volume key through
// the KMS, loads the dm-crypt table with it, wipes it and exits.
func runLuksWorker(ctx context.Context, env *cliEnv, args []string) error {
	status, err := openStatusPipe(luksWorkerCommand, "kmsagent mount luks")
	if err != nil {
		return err
	}
	if err := hardenWorker(); err != nil {
		status.warn(err.Error())
	}
	err = func() error {
		var lf luksFlags
		pos, err := parseFlags(env, luksWorkerCommand, "DEVICE", args, 1, 1, lf.define)
		if err != nil {
			return err
		}
		kms, err := openKMS(ctx, env)
		if err != nil {
			return &crypt.StepError{Step: crypt.StepKMS, Err: err}
		}
		ctl, err := dm.Open()
		if err != nil {
			return err
		}
		defer ctl.Close()
		req := crypt.UnlockRequest{Device: pos[0], Name: lf.name, ReadOnly: lf.readOnly, AllowDiscards: lf.discard}
		return crypt.Activate(ctx, ctl, kms, req, status.step)
	}()
	status.done(err)
	return err
}

// runUmountLuks closes the block volume named target (a mount point or a
// device-mapper name); a target that is neither is an error.
func runUmountLuks(ctx context.Context, env *cliEnv, target string, lazy bool) error {
	notOurs := fmt.Errorf("%s is not a kmsagent mount or volume (see kmsagent status)", target)
	ctl, err := dm.Open()
	if err != nil {
		return notOurs
	}
	defer ctl.Close()
	name, ok, err := crypt.Resolve(ctl, target)
	if err != nil {
		return err
	}
	if !ok {
		return notOurs
	}
	res, err := crypt.Close(ctx, ctl, name, crypt.CloseOptions{Lazy: lazy})
	for _, mp := range res.Unmounted {
		fmt.Fprintf(env.stdout, "%s: unmounted\n", mp)
	}
	if err != nil {
		return err
	}
	switch {
	case res.Deferred:
		fmt.Fprintf(env.stdout, "%s: still in use; marked for removal when its last user closes it (the key stays in the kernel until then)\n", name)
	case res.Loop != "" && !res.LoopDetached:
		fmt.Fprintf(env.stdout, "%s: closed, key wiped; %s is still attached (not ours or still in use)\n", name, res.Loop)
	default:
		fmt.Fprintf(env.stdout, "%s: closed, key wiped\n", name)
	}
	return nil
}

// stepClock times the steps of mount luks for --verbose.
type stepClock struct {
	names []string
	at    []time.Time
}

// mark starts step name ("" ends the last one).
func (c *stepClock) mark(name string) {
	c.names = append(c.names, name)
	c.at = append(c.at, time.Now())
}

func (c *stepClock) String() string {
	var parts []string
	for i := 0; i+1 < len(c.names); i++ {
		if c.names[i] == "" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %v", c.names[i], c.at[i+1].Sub(c.at[i]).Round(100*time.Microsecond)))
	}
	if len(c.at) > 1 {
		parts = append(parts, fmt.Sprintf("total %v", c.at[len(c.at)-1].Sub(c.at[0]).Round(100*time.Microsecond)))
	}
	return "steps: " + strings.Join(parts, ", ")
}
