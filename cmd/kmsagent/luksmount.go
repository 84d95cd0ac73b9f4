package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"kmsagent/agent/service"
	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
)

// luksWorkerCommand is the hidden command that unlocks one block volume:
// the only process that holds its key, for the moment it takes to load
// the dm-crypt table.
const luksWorkerCommand = service.UnlockWorkerCommand

// keyWorkerCommand is the hidden command that writes one crypttab
// volume's key to systemd-cryptsetup's connection for the daemon.
const keyWorkerCommand = service.KeyWorkerCommand

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
	spec := service.Spec{Kind: service.KindLUKS, Name: lf.name, Source: pos[0], FSType: fsType, ReadOnly: lf.readOnly, Discard: lf.discard}
	if options != "" {
		spec.Options = []string{options}
	}
	if len(pos) == 2 {
		spec.Target = pos[1]
	} else if fsType != "" || options != "" {
		return usagef("mount luks: --fs-type and -o need a MOUNTPOINT")
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	steps := &stepClock{}
	v, err := svc.MountWithProgress(ctx, spec, steps.mark)
	if verbose && len(steps.names) > 0 {
		fmt.Fprintf(env.stderr, "kmsagent: %s\n", steps)
	}
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%s: volume %s opened", v.Device, v.UUID)
	if v.Loop != "" {
		msg += " (image on " + v.Loop + ")"
	}
	if v.Target != "" {
		msg += fmt.Sprintf(", %s mounted on %s", v.FSType, v.Target)
	}
	fmt.Fprintln(env.stdout, msg)
	return nil
}

// runLuksWorker is the unlock worker (service.RunUnlockWorker).
func runLuksWorker(ctx context.Context, env *cliEnv, args []string) error {
	pipe, err := worker.OpenPipe()
	if err != nil {
		return fmt.Errorf("%s is started by kmsagent mount luks", luksWorkerCommand)
	}
	var lf luksFlags
	kmsAttempts := 0
	pos, err := parseFlags(env, luksWorkerCommand, "DEVICE", args, 1, 1, func(fs *flag.FlagSet) {
		lf.define(fs)
		fs.IntVar(&kmsAttempts, "kms-attempts", 0, "tries of a throttled or unavailable KMS call (0: the default)")
	})
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	svc, err := newWorkerService(env, "", kmsAttempts)
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	req := crypt.UnlockRequest{Device: pos[0], Name: lf.name, ReadOnly: lf.readOnly, AllowDiscards: lf.discard}
	return svc.RunUnlockWorker(ctx, req, pipe)
}

// runKeyWorker is the crypttab key worker (service.RunKeyWorker): the
// client's connection is fd 4, the go-ahead pipe fd 5.
func runKeyWorker(ctx context.Context, env *cliEnv, args []string) error {
	pipe, err := worker.OpenPipe()
	if err != nil {
		return fmt.Errorf("%s is started by kmsagent run", service.KeyWorkerCommand)
	}
	conn, gate := pipe.File(0, "connection"), pipe.File(1, "go-ahead")
	defer conn.Close()
	defer gate.Close()
	pos, err := parseFlags(env, service.KeyWorkerCommand, "DEVICE", args, 1, 1, nil)
	if err == nil && (conn == nil || gate == nil) {
		err = errors.New("no connection on fd 4 or go-ahead pipe on fd 5")
	}
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	svc, err := newService(env)
	if err != nil {
		pipe.Done(err, nil)
		return err
	}
	return svc.RunKeyWorker(ctx, pos[0], pipe, conn, gate)
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
