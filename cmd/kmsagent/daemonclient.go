package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
)

// connectDaemon returns a client of the running daemon, or nil when none
// answers on the configured control socket: it is not running, or this
// user may not use its socket. Commands that the daemon serves (status,
// mount NAME, umount) then act directly, as they do on a host without
// the daemon.
func connectDaemon(ctx context.Context, env *cliEnv) *control.Client {
	socket := config.DefaultAgentSocket
	if cfg, err := loadConfig(env); err == nil && cfg.Agent.Socket != "" {
		socket = cfg.Agent.Socket
	}
	c := control.NewClient(socket)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.Health(ctx); err != nil {
		c.Close()
		return nil
	}
	return c
}

// runMountByName is `kmsagent mount NAME`: a [[volume]] of the
// configuration, mounted by the daemon.
func runMountByName(ctx context.Context, env *cliEnv, args []string) error {
	pos, err := parseFlags(env, "mount", "NAME", args, 1, 1, nil)
	if err != nil {
		return err
	}
	c := connectDaemon(ctx, env)
	if c == nil {
		return usagef("mount %s: no kmsagent daemon answers (kmsagent run mounts the [[volume]] entries); mount a share or device directly with kmsagent mount fuse|luks", pos[0])
	}
	defer c.Close()
	v, err := c.Mount(ctx, pos[0])
	if err != nil {
		return advise(nil, err)
	}
	fmt.Fprintf(env.stdout, "%s: %s on %s\n", v.Name, v.State, orDash(v.Target))
	return nil
}

// umountThroughDaemon asks the daemon to unmount one of its volumes;
// handled is false when no daemon answers or the volume is not one of
// its own, and the command then acts directly.
func umountThroughDaemon(ctx context.Context, env *cliEnv, nameOrTarget string, lazy bool) (handled bool, err error) {
	c := connectDaemon(ctx, env)
	if c == nil {
		return false, nil
	}
	defer c.Close()
	err = c.Unmount(ctx, nameOrTarget, lazy)
	if errors.Is(err, daemon.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, advise(nil, err)
	}
	fmt.Fprintf(env.stdout, "%s: unmounted by the daemon\n", nameOrTarget)
	return true, nil
}

// printDaemonVolumes prints the daemon's table of configured volumes
// above the kernel's view.
func printDaemonVolumes(env *cliEnv, st control.StatusReply) {
	fmt.Fprintf(env.stdout, "daemon: %s\n", st.Status)
	if len(st.Volumes) == 0 {
		fmt.Fprintln(env.stdout)
		return
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tTARGET\tRETRIES\tLAST ERROR")
	for _, v := range st.Volumes {
		state := v.State
		if v.UnlockedBy != "" {
			state += " (unlocked by " + v.UnlockedBy + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, v.Kind, state, orDash(v.Target), v.Retries, orDash(v.LastError))
	}
	tw.Flush()
	fmt.Fprintln(env.stdout)
}
