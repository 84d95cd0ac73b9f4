package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"kmsagent/kmsclient"
)

// command is one node of the command tree: a group with subcommands
// (kmsagent kms, kmsagent image) or a leaf that runs. A leaf parses its own
// flags with parseFlags, so that its --help lists them.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
	sub     []*command
	hidden  bool // internal, not in the usage
}

// Exit statuses. Scripts, crypttab helpers and systemd units tell a
// failure worth retrying from one that needs an admin by these.
const (
	exitOK      = 0
	exitFailure = 1  // anything not listed below
	exitUsage   = 2  // wrong command line; nothing was done
	exitTemp    = 75 // EX_TEMPFAIL: the KMS is unreachable or throttling; try again later
	exitKey     = 77 // EX_NOPERM: the KMS refused the key (disabled, deleted, not found, access denied, not this volume's key)
)

// exitCode is the exit status for the error a command returned.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, kmsclient.ErrUnavailable), errors.Is(err, kmsclient.ErrThrottled):
		return exitTemp
	case errors.Is(err, kmsclient.ErrKeyDisabled), errors.Is(err, kmsclient.ErrKeyPendingDeletion),
		errors.Is(err, kmsclient.ErrKeyNotFound), errors.Is(err, kmsclient.ErrAccessDenied),
		errors.Is(err, kmsclient.ErrInvalidCiphertext):
		return exitKey
	}
	return exitFailure
}

// usageError is a wrong command line; it exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "--help" || arg == "-help" || arg == "-h" || arg == "help"
}

// dispatch runs the subcommand args[0] of group c, whose full name is path
// (e.g. "kmsagent kms").
func (c *command) dispatch(ctx context.Context, env *cliEnv, path string, args []string) error {
	// Messages get "kmsagent: " in front of them; say which group only
	// below the top.
	where := ""
	if sub, ok := strings.CutPrefix(path, "kmsagent "); ok {
		where = sub + ": "
	}
	if len(args) == 0 {
		c.printUsage(env.stderr, path)
		return usagef("%smissing command; see %s --help", where, path)
	}
	if isHelp(args[0]) {
		c.printUsage(env.stdout, path)
		return nil
	}
	for _, s := range c.sub {
		if s.name != args[0] {
			continue
		}
		if s.sub != nil {
			return s.dispatch(ctx, env, path+" "+s.name, args[1:])
		}
		return s.run(ctx, env, args[1:])
	}
	if c.run != nil {
		// A group that also takes arguments of its own (mount NAME).
		return c.run(ctx, env, args)
	}
	return usagef("%sunknown command %q; see %s --help", where, args[0], path)
}

func (c *command) printUsage(w io.Writer, path string) {
	fmt.Fprintf(w, "usage: %s COMMAND [ARGS]\n", path)
	if c.summary != "" && path != "kmsagent" {
		fmt.Fprintf(w, "\n%s\n", c.summary)
	}
	fmt.Fprintln(w, "\nCommands:")
	for _, s := range c.sub {
		if !s.hidden {
			fmt.Fprintf(w, "  %-18s %s\n", s.name, s.summary)
		}
	}
	fmt.Fprintf(w, "\nRun %s COMMAND --help for a command's options.\n", path)
}

// parseFlags parses flags that may come before, between or after the
// positional arguments (admins type `describe-key ID --json`), and checks
// the number of positional arguments (maxArgs < 0: no limit). "--" ends
// the flags: everything after it is an argument, even if it starts with
// a dash. name is the command's name below kmsagent ("image encrypt").
func parseFlags(env *cliEnv, name, argsUsage string, args []string, minArgs, maxArgs int, define func(*flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if define != nil {
		define(fs)
	}
	usage := "usage: kmsagent " + name
	if hasFlags(fs) {
		usage += " [OPTIONS]"
	}
	if argsUsage != "" {
		usage += " " + argsUsage
	}
	var positional []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(env.stdout, usage)
				printFlags(env.stdout, fs)
				return nil, err
			}
			return nil, usagef("%s: %s; see kmsagent %s --help", name, dashes(err.Error()), name)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if len(positional) < minArgs || (maxArgs >= 0 && len(positional) > maxArgs) {
		if argsUsage == "" {
			return nil, usagef("%s takes no arguments; see kmsagent %s --help", name, name)
		}
		return nil, usagef("%s; see kmsagent %s --help", usage, name)
	}
	return positional, nil
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags lists the flags as the messages spell them: --name.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	if !hasFlags(fs) {
		return
	}
	fmt.Fprintln(w, "\nOptions:")
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + strings.ToUpper(kind)
		}
		fmt.Fprintf(w, "%s\n      %s", line, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// dashes rewrites the flag package's "-name" in its messages as
// "--name", the spelling of the help and of every other message.
func dashes(msg string) string {
	if after, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown option --" + after
	}
	if after, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "option --" + after + " needs a value"
	}
	return strings.Replace(msg, " for flag -", " for --", 1)
}
