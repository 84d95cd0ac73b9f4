// Command kmsagent keeps disks and shares encrypted with keys held in a
// KMS. This file dispatches subcommands; each lives in its own file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. run returns an error for the one-line report
// on stderr; usage errors are *usageError and exit with status 2.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
	hidden  bool // internal, not in the usage
}

// cliEnv is what every command gets instead of globals.
type cliEnv struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	configFlag     string
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func commands() []command {
	return []command{
		{name: "format", summary: "initialise an encrypted share or LUKS2 volume (format fuse DIR | format luks DEVICE)", run: runFormat},
		{name: "mount", summary: "mount a share (mount fuse DIR MOUNTPOINT) or open a LUKS2 volume (mount luks DEVICE)", run: runMount},
		{name: "umount", summary: "unmount a share or close a volume (umount MOUNTPOINT|NAME); keys are wiped", run: runUmount},
		{name: "enroll", summary: "bind an existing LUKS2 volume to the KMS (enroll DEVICE|FILE --key-id ID --passphrase-file F)", run: runEnroll},
		{name: "unenroll", summary: "remove the KMS token and keyslot from a LUKS2 volume", run: runUnenroll},
		{name: "image", summary: "offline LUKS2 images: image encrypt|decrypt|inspect|rewrap", run: runImage},
		{name: "rewrap", summary: "re-wrap a volume's key under another KMS key or key version; data untouched", run: runRewrap},
		{name: "status", summary: "list mounted shares and open block volumes", run: runStatus},
		{name: "export-key", summary: "break-glass: print a share's or volume's key in hex (root only)", run: runExportKey},
		{name: "kms", summary: "manage the embedded KMS and serve it to other hosts", run: runKMS},
		{name: "version", summary: "print the version", run: runVersion},
		{name: fuseWorkerCommand, run: runFuseWorker, hidden: true},
		{name: luksWorkerCommand, run: runLuksWorker, hidden: true},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cliEnv{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("kmsagent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&env.configFlag, "config", "", "configuration file (default $KMSAGENT_CONFIG or /etc/kmsagent/agent.toml)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(env.stdout)
			return 0
		}
		fmt.Fprintf(env.stderr, "kmsagent: %v; see kmsagent --help\n", err)
		return 2
	}
	if fs.NArg() == 0 {
		printUsage(env.stderr)
		return 2
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		printUsage(env.stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == name {
			return report(env, c.run(ctx, env, rest))
		}
	}
	fmt.Fprintf(env.stderr, "kmsagent: unknown command %q; see kmsagent --help\n", name)
	return 2
}

func report(env *cliEnv, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(env.stderr, "kmsagent: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: kmsagent [--config FILE] COMMAND [ARGS]\n\nCommands:")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun kmsagent COMMAND --help for a command's options.")
}

func runVersion(ctx context.Context, env *cliEnv, args []string) error {
	if _, err := parseFlags(env, "version", "", args, 0, 0, nil); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "kmsagent %s\n", version)
	return nil
}

// parseFlags parses flags that may come before, between or after the
// positional arguments (admins type `describe-key ID --json`), and checks
// the number of positional arguments.
func parseFlags(env *cliEnv, name, argsUsage string, args []string, minArgs, maxArgs int, define func(*flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if define != nil {
		define(fs)
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(env.stdout, "usage: kmsagent %s [OPTIONS] %s\n", name, argsUsage)
				fs.SetOutput(env.stdout)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usagef("%s: %v; see kmsagent %s --help", name, err, name)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			positional = append(positional, args[1:]...)
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(positional) < minArgs || (maxArgs >= 0 && len(positional) > maxArgs) {
		if argsUsage == "" {
			return nil, usagef("%s takes no arguments; see kmsagent %s --help", name, name)
		}
		return nil, usagef("usage: kmsagent %s [OPTIONS] %s", name, argsUsage)
	}
	return positional, nil
}
