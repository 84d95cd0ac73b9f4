package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"kmsagent/kmsclient"
)

// runCLI runs the command line in process and returns stdout, stderr and
// the exit status.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr, stdin: strings.NewReader("")}, args)
	return stdout.String(), stderr.String(), code
}

// singleDash finds a flag spelt with one dash in text meant for admins.
var singleDash = regexp.MustCompile(`(^|[\s(\[])-[a-z][a-z-]+`)

// TestHelpAtEveryLevel walks the whole command tree: --help prints that
// level's usage on stdout and exits 0, and spells flags with two dashes.
func TestHelpAtEveryLevel(t *testing.T) {
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		for _, s := range c.sub {
			if s.hidden {
				continue
			}
			p := append(append([]string(nil), path...), s.name)
			walk(s, p)
			for _, help := range []string{"--help", "-h"} {
				args := append(append([]string(nil), p...), help)
				stdout, stderr, code := runCLI(t, args...)
				want := "usage: kmsagent " + strings.Join(p, " ")
				if code != exitOK || !strings.HasPrefix(stdout, want) || stderr != "" {
					t.Errorf("kmsagent %s: exit %d, stdout %q, stderr %q; want exit 0 and %q", strings.Join(args, " "), code, stdout, stderr, want)
				}
				if m := singleDash.FindString(stdout); m != "" {
					t.Errorf("kmsagent %s: help spells a flag with one dash: %q", strings.Join(args, " "), m)
				}
			}
		}
	}
	walk(commandTree(), nil)
	if stdout, _, code := runCLI(t, "--help"); code != exitOK || !strings.Contains(stdout, "kms ") {
		t.Errorf("kmsagent --help: exit %d, %q", code, stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"kms"}, "kms: missing command"},
		{[]string{"kms", "bogus"}, `kms: unknown command "bogus"`},
		{[]string{"format", "ext4"}, `format: unknown command "ext4"`},
		{[]string{"status", "--bogus"}, "unknown option --bogus"},
		{[]string{"status", "extra"}, "status takes no arguments"},
		{[]string{"image", "encrypt", "--key-id"}, "option --key-id needs a value"},
		{[]string{"image", "encrypt", "--sector-size", "x", "a", "b"}, "--sector-size"},
		{[]string{"--bogus"}, "unknown option --bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tt.want)
			}
			last := strings.TrimSpace(stderr)
			if i := strings.LastIndexByte(last, '\n'); i >= 0 {
				last = last[i+1:]
			}
			if m := singleDash.FindString(last); m != "" {
				t.Errorf("error spells a flag with one dash: %q in %q", m, last)
			}
		})
	}
}

// TestDoubleDashEndsFlags: after "--" every word is an argument, even
// one that looks like a flag.
func TestDoubleDashEndsFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
	}{
		{[]string{"--", "-weird-name"}, []string{"-weird-name"}},
		{[]string{"--lazy", "--", "--lazy"}, []string{"--lazy"}},
		{[]string{"a", "--lazy", "--", "-b", "--", "c"}, []string{"a", "-b", "--", "c"}},
		{[]string{"a", "--lazy"}, []string{"a"}},
	}
	for _, tt := range tests {
		var lazy bool
		env := &cliEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		pos, err := parseFlags(env, "umount", "X", tt.args, 0, -1, func(fs *flag.FlagSet) { fs.BoolVar(&lazy, "lazy", false, "") })
		if err != nil || fmt.Sprint(pos) != fmt.Sprint(tt.wantPos) {
			t.Errorf("parseFlags(%q) = %q, %v; want %q", tt.args, pos, err, tt.wantPos)
		}
	}
	_, stderr, code := runCLI(t, "umount", "--", "-weird-name")
	if code != exitFailure || !strings.Contains(stderr, "-weird-name is not a kmsagent mount") {
		t.Errorf("umount -- -weird-name: exit %d, %q", code, stderr)
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("disk full"), exitFailure},
		{usagef("bad"), exitUsage},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrUnavailable), exitTemp},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrThrottled), exitTemp},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrKeyDisabled), exitKey},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrKeyPendingDeletion), exitKey},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrKeyNotFound), exitKey},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrAccessDenied), exitKey},
		{fmt.Errorf("unwrap: %w", kmsclient.ErrInvalidCiphertext), exitKey},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
