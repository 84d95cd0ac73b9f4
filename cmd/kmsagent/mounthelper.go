package main

import (
	"context"
	"fmt"
	"strings"

	"kmsagent/agent/service"
)

// mountHelperName is the name under which the binary acts as mount(8)'s
// helper for file system type kmsagent, so that fstab lines such as
//
//	/srv/cipher/share  /srv/share     kmsagent  defaults,_netdev  0 0
//	/dev/vdb           /srv/data      kmsagent  defaults,nofail   0 0
//
// mount at boot (systemd's mount units run mount(8), which runs
// /sbin/mount.kmsagent). The package installs it as a symbolic link.
const mountHelperName = "mount.kmsagent"

// Exit statuses of mount(8), which passes the helper's on: scripts and
// systemd tell a wrong fstab line from a failed mount by them.
const (
	mountExitUsage   = 1
	mountExitFailure = 32
)

// mountHelperIgnored reports whether option o is one mount(8) or systemd
// reads from fstab and the helper has nothing to do with: it must not
// reach the mount, where it would be an unknown option.
func mountHelperIgnored(o string) bool {
	switch o {
	case "", "defaults", "_netdev", "nofail", "auto", "noauto", "nouser":
		return true
	}
	return strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment=")
}

// mountHelperArgs is a mount(8) helper command line:
//
//	mount.kmsagent SOURCE TARGET [-sfnv] [-o OPTIONS] [-t TYPE]
type mountHelperArgs struct {
	source, target string
	options        []string // without the ignored ones
	sloppy         bool     // -s: drop options a share does not know
	fake           bool     // -f: check everything, mount nothing
	verbose        bool     // -v
}

func parseMountHelperArgs(args []string) (mountHelperArgs, error) {
	var a mountHelperArgs
	var pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case arg == "-o" || arg == "-t" || arg == "-N":
			if i+1 == len(args) {
				return a, usagef("%s: option %s needs a value", mountHelperName, arg)
			}
			i++
			if err := a.option(arg[1], args[i]); err != nil {
				return a, err
			}
		case strings.HasPrefix(arg, "-o") || strings.HasPrefix(arg, "-t") || strings.HasPrefix(arg, "-N"):
			if err := a.option(arg[1], arg[2:]); err != nil {
				return a, err
			}
		case len(arg) > 1 && arg[0] == '-':
			// mount(8) passes -s, -f, -n and -v, each alone or together.
			for _, c := range arg[1:] {
				switch c {
				case 's':
					a.sloppy = true
				case 'f':
					a.fake = true
				case 'n':
					// There is no /etc/mtab to leave alone.
				case 'v':
					a.verbose = true
				default:
					return a, usagef("%s: unknown option -%c; usage: %s SOURCE TARGET [-sfnv] [-o OPTIONS]", mountHelperName, c, mountHelperName)
				}
			}
		default:
			pos = append(pos, arg)
		}
	}
	if len(pos) != 2 {
		return a, usagef("usage: %s SOURCE TARGET [-sfnv] [-o OPTIONS] (SOURCE: a share's cipher directory or a LUKS2 device or image)", mountHelperName)
	}
	a.source, a.target = pos[0], pos[1]
	return a, nil
}

func (a *mountHelperArgs) option(flag byte, value string) error {
	switch flag {
	case 'o':
		for _, o := range strings.Split(value, ",") {
			if !mountHelperIgnored(o) {
				a.options = append(a.options, o)
			}
		}
	case 't':
		// mount(8) says -t kmsagent, or kmsagent.SUBTYPE for a type
		// written that way in fstab; there is only one kind.
		if value != "kmsagent" && !strings.HasPrefix(value, "kmsagent.") {
			return usagef("%s: type %q is not kmsagent", mountHelperName, value)
		}
	case 'N':
		return usagef("%s: -N (mount in another namespace) is not supported; run mount inside that namespace with nsenter", mountHelperName)
	}
	return nil
}

// kmsagentArgs is the kmsagent command line that does the mount: mount
// fuse for a share's cipher directory, mount luks for anything else.
func (a *mountHelperArgs) kmsagentArgs(warn func(string)) ([]string, error) {
	if service.KindOf(a.source) == service.KindShare {
		var opts []string
		for _, o := range a.options {
			if err := service.CheckShareOption(o); err != nil {
				if !a.sloppy {
					return nil, advise(nil, err)
				}
				warn(fmt.Sprintf("ignoring option %s (-s)", o))
				continue
			}
			opts = append(opts, o)
		}
		return []string{"mount", "fuse", "-o", strings.Join(opts, ","), "--", a.source, a.target}, nil
	}
	args := []string{"mount", "luks"}
	for _, o := range a.options {
		if o == "ro" {
			// Map the device read-only too, not only the file system.
			args = append(args, "--read-only")
			break
		}
	}
	return append(args, "-o", strings.Join(a.options, ","), "--", a.source, a.target), nil
}

// mountHelper is main for mount.kmsagent; it returns the exit status.
func mountHelper(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintf(env.stdout, "usage: %s SOURCE TARGET [-sfnv] [-o OPTIONS]\n\n"+
			"mount(8) helper for fstab type kmsagent: a directory SOURCE is a share's cipher\n"+
			"directory (kmsagent mount fuse), anything else a LUKS2 device or image\n"+
			"(kmsagent mount luks). Ignored: defaults, _netdev, nofail, auto, noauto, x-*.\n", mountHelperName)
		return exitOK
	}
	warn := func(msg string) { fmt.Fprintf(env.stderr, "%s: %s\n", mountHelperName, msg) }
	a, err := parseMountHelperArgs(args)
	var kargs []string
	if err == nil {
		kargs, err = a.kmsagentArgs(warn)
	}
	if err != nil {
		warn(strings.TrimPrefix(err.Error(), mountHelperName+": "))
		return mountExitUsage
	}
	if a.verbose || a.fake {
		warn("kmsagent " + strings.Join(kargs, " "))
	}
	if a.fake {
		return exitOK
	}
	if code := run(ctx, env, kargs); code != exitOK {
		if code == exitUsage {
			return mountExitUsage
		}
		return mountExitFailure
	}
	return exitOK
}
