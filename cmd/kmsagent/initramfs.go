package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/initramfs"
	"kmsagent/agent/secret"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// defaultAskpass is cryptsetup-initramfs' console prompt: it asks on the
// console (or through plymouth) and prints the answer on stdout.
const defaultAskpass = "/lib/cryptsetup/askpass"

func initramfsCommands() []*command {
	return []*command{
		{name: "config", summary: "print the KMS-only configuration for the initramfs; refuses stored secrets", run: runInitramfsConfig},
		{name: "key", summary: "crypttab keyscript: unwrap SOURCE's key through the KMS and print its passphrase", run: runInitramfsKey},
	}
}

// runInitramfsConfig is what the initramfs-tools hook calls: the [kms]
// table alone, or with --files the public files it names, one a line.
func runInitramfsConfig(ctx context.Context, env *cliEnv, args []string) error {
	var files bool
	if _, err := parseFlags(env, "initramfs config", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&files, "files", false, "print the files the configuration names (to copy into the initramfs), one a line")
	}); err != nil {
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	plan, err := initramfs.NewPlan(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", cfgName(cfg), err)
	}
	if files {
		for _, f := range plan.Files {
			fmt.Fprintln(env.stdout, f)
		}
		return nil
	}
	_, err = env.stdout.Write(plan.Config)
	return err
}

// runInitramfsKey is the keyscript's body. cryptsetup reads its stdout
// as the passphrase, byte for byte; everything else goes to stderr, which
// is the console in the initramfs.
func runInitramfsKey(ctx context.Context, env *cliEnv, args []string) error {
	askpass, recordDir := defaultAskpass, initramfs.RecordDir
	pos, err := parseFlags(env, "initramfs key", "[SOURCE]", args, 0, 1, func(fs *flag.FlagSet) {
		fs.StringVar(&askpass, "askpass", askpass, "program that asks for the recovery passphrase when the KMS refuses the key or cannot be reached; empty for none")
		fs.StringVar(&recordDir, "record-dir", recordDir, "where to note the volumes unlocked, for the daemon after the switch to the real root")
	})
	if err != nil {
		return err
	}
	source := os.Getenv("CRYPTTAB_SOURCE")
	if len(pos) == 1 {
		source = pos[0]
	}
	if source == "" {
		return usagef("initramfs key: give SOURCE, or run it as a crypttab keyscript (which sets CRYPTTAB_SOURCE)")
	}
	name := os.Getenv("CRYPTTAB_NAME")
	if name == "" {
		name = source
	}
	dev, err := volume.OpenDevice(resolveSource(source), false)
	if err != nil {
		return err
	}
	defer dev.Close()
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	kms, err := initramfs.OpenKMS(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", cfgName(cfg), err)
	}
	pass, cmk, typed, err := unlockOrAsk(ctx, env, dev, kms, name, askpass)
	if typed != nil {
		// The recovery passphrase typed at the console while the KMS
		// could not be reached; cryptsetup tries it like any other.
		defer clear(typed)
		_, err := env.stdout.Write(typed)
		return err
	}
	var refused *initramfs.RefusedError
	if errors.As(err, &refused) {
		fmt.Fprintln(env.stderr, initramfs.Refusal(name, refused))
		if len(refused.Recovery) > 0 && askpass != "" {
			dev.Close()
			prompt := fmt.Sprintf("Recovery passphrase for %s (keyslot %s): ", name, joinInts(refused.Recovery))
			// askpass takes over stdout: the passphrase goes from the
			// console to cryptsetup without passing through us.
			return syscall.Exec(askpass, []string{askpass, prompt}, os.Environ())
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if err != nil {
		return err
	}
	defer pass.Wipe()
	if _, err := env.stdout.Write(pass.Bytes()); err != nil {
		return err
	}
	// For the daemon after the switch to the real root; the unlock does
	// not depend on it.
	if h, err := volume.ReadHeader(dev); err == nil {
		rec := initramfs.Record{Name: name, UUID: h.UUID(), Source: source, Provider: cmk.Provider, KeyID: cmk.KeyID, Time: time.Now().UTC()}
		if err := initramfs.WriteRecord(recordDir, rec); err != nil {
			fmt.Fprintf(env.stderr, "kmsagent: %s: warning: %v; the daemon will show the volume as opened by cryptsetup\n", name, err)
		}
	}
	return nil
}

// unlockOrAsk runs initramfs.Unlock and, once a round could not reach
// the KMS, offers the volume's recovery passphrase on the console (askpass
// as a child) while it keeps trying: an admin at the console of a host
// whose KMS is down for good need not wait for it, and a host nobody
// attends still unlocks by itself once the KMS answers. Whichever comes
// first wins: a passphrase typed at the console is returned as typed (the
// KMS's, if it came too, is wiped); the KMS's answer withdraws the prompt.
// A prompt that ends without a passphrase (no console, an empty line)
// leaves the KMS to it.
func unlockOrAsk(ctx context.Context, env *cliEnv, dev volume.Device, kms kmsclient.KMS, name, askpass string) (*secret.Key, token.KMS, []byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan *recoveryPrompt, 1)
	o := initramfs.Options{Name: name, Console: env.stderr, Unreachable: func(recovery []int) {
		if len(recovery) == 0 || askpass == "" {
			return
		}
		text := fmt.Sprintf("The KMS cannot be reached; still trying. Recovery passphrase for %s (keyslot %s), or wait: ", name, joinInts(recovery))
		p, err := startRecoveryPrompt(askpass, text, env.stderr)
		if err != nil {
			fmt.Fprintf(env.stderr, "kmsagent: %s: cannot ask for the recovery passphrase: %v; still trying the KMS\n", name, err)
			return
		}
		started <- p
	}}
	type result struct {
		pass *secret.Key
		cmk  token.KMS
		err  error
	}
	done := make(chan result, 1)
	go func() {
		pass, cmk, err := initramfs.Unlock(ctx, dev, kms, o)
		done <- result{pass, cmk, err}
	}()
	var prompt *recoveryPrompt
	var answers <-chan recoveryAnswer
	for {
		select {
		case prompt = <-started:
			answers = prompt.answer
		case a := <-answers:
			answers = nil
			if a.err != nil || len(a.pass) == 0 {
				why := "an empty answer"
				if a.err != nil {
					why = a.err.Error()
				}
				fmt.Fprintf(env.stderr, "kmsagent: %s: the recovery prompt ended without a passphrase (%s); still trying the KMS\n", name, why)
				continue
			}
			cancel()
			if r := <-done; r.pass != nil {
				r.pass.Wipe()
			}
			fmt.Fprintf(env.stderr, "kmsagent: %s: trying the recovery passphrase typed at the console\n", name)
			return nil, token.KMS{}, a.pass, nil
		case r := <-done:
			// Unlock has returned, so a prompt it started is in started
			// by now if this select did not take it yet.
			if prompt == nil {
				select {
				case prompt = <-started:
					answers = prompt.answer
				default:
				}
			}
			if answers != nil {
				prompt.stop()
				if r.err == nil {
					fmt.Fprintf(env.stderr, "\nkmsagent: %s: the KMS answered; recovery prompt withdrawn\n", name)
				}
			}
			return r.pass, r.cmk, nil, r.err
		}
	}
}

// recoveryPrompt is askpass running as a child, in a process group of its
// own (it may have started plymouth's or systemd's password client).
type recoveryPrompt struct {
	cmd    *exec.Cmd
	answer chan recoveryAnswer // one value, once askpass has exited
	// The console's settings before askpass turned echo off, put back by
	// stop; nil when stdin is not a terminal.
	tty *unix.Termios
}

type recoveryAnswer struct {
	pass []byte
	err  error
}

// maxPassphrase bounds what is read from askpass (cryptsetup's own limit
// for a passphrase read from a keyscript is 8 MiB; a typed one is short).
const maxPassphrase = 64 << 10

func startRecoveryPrompt(askpass, text string, console io.Writer) (*recoveryPrompt, error) {
	cmd := exec.Command(askpass, text)
	cmd.Stdin, cmd.Stderr = os.Stdin, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &recoveryPrompt{cmd: cmd, answer: make(chan recoveryAnswer, 1)}
	if t, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
		p.tty = t
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		pass, err := io.ReadAll(io.LimitReader(out, maxPassphrase))
		if werr := cmd.Wait(); err == nil {
			err = werr
		}
		p.answer <- recoveryAnswer{pass, err}
	}()
	return p, nil
}

// stop ends askpass's process group, SIGKILL if SIGTERM has not done it
// within a second, and puts the console's settings back.
func (p *recoveryPrompt) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var a recoveryAnswer
	select {
	case a = <-p.answer:
	case <-time.After(time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		a = <-p.answer
	}
	clear(a.pass)
	if p.tty != nil {
		_ = unix.IoctlSetTermios(int(os.Stdin.Fd()), unix.TCSETS, p.tty)
	}
}

// resolveSource turns a crypttab source spec into a device path; cryptroot
// hands keyscripts a resolved path already, this is for a hand-run.
func resolveSource(s string) string {
	for _, tag := range []struct{ prefix, dir string }{
		{"UUID=", "/dev/disk/by-uuid"}, {"PARTUUID=", "/dev/disk/by-partuuid"},
		{"LABEL=", "/dev/disk/by-label"}, {"PARTLABEL=", "/dev/disk/by-partlabel"},
	} {
		if v, ok := strings.CutPrefix(s, tag.prefix); ok {
			return filepath.Join(tag.dir, v)
		}
	}
	return s
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
