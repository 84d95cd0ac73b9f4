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
	"path/filepath"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// cliEnv is what every command gets instead of globals.
type cliEnv struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	configFlag     string
}

// commandTree is the whole command line of kmsagent.
func commandTree() *command {
	return &command{name: "kmsagent", sub: []*command{
		{name: "run", summary: "run the daemon: mount the configured volumes, serve the control socket", run: runDaemon},
		{name: "format", summary: "initialise an encrypted share or LUKS2 volume", sub: []*command{
			{name: "fuse", summary: "initialise a gocryptfs-v2 share in DIR, key from the KMS", run: runFormatFuse},
			{name: "luks", summary: "write a LUKS2 header with a KMS keyslot to a device or image file", run: runFormatLuks},
		}},
		{name: "mount", summary: "mount a share or open a LUKS2 volume; mount NAME asks the daemon to mount a [[volume]]", run: runMountByName, sub: []*command{
			{name: "fuse", summary: "mount share DIR on MOUNTPOINT; a worker serves it", run: runMountFuse},
			{name: "luks", summary: "open a LUKS2 volume with dm-crypt and mount it", run: runMountLuks},
		}},
		{name: "umount", summary: "unmount a share or close a volume (MOUNTPOINT|NAME); keys are wiped", run: runUmount},
		{name: "enroll", summary: "bind an existing LUKS2 volume to the KMS", run: runEnroll},
		{name: "unenroll", summary: "remove the KMS token and keyslot from a LUKS2 volume", run: runUnenroll},
		{name: "image", summary: "offline LUKS2 images", sub: []*command{
			{name: "encrypt", summary: "encrypt a raw image into a LUKS2 image", run: runImageEncrypt},
			{name: "decrypt", summary: "decrypt a LUKS2 image into a raw image", run: runImageDecrypt},
			{name: "inspect", summary: "show a LUKS2 image's header, keyslots and token", run: runImageInspect},
			{name: "rewrap", summary: "re-wrap an image's key under another KMS key; data untouched", run: rewrapCmd("image rewrap")},
		}},
		{name: "rewrap", summary: "re-wrap a volume's key under another KMS key or key version; data untouched", run: rewrapCmd("rewrap")},
		{name: "status", summary: "list mounted shares and open block volumes", run: runStatus},
		{name: "export-key", summary: "break-glass: print a share's or volume's key in hex (root only)", run: runExportKey},
		{name: "kms", summary: "manage the embedded KMS and serve it to other hosts", sub: kmsCommands()},
		{name: "initramfs", summary: "early-boot unlock of an encrypted root (initramfs-tools hook and keyscript)", sub: initramfsCommands()},
		{name: "version", summary: "print the version", run: runVersion},
		{name: fuseWorkerCommand, run: runFuseWorker, hidden: true},
		{name: luksWorkerCommand, run: runLuksWorker, hidden: true},
		{name: fuseReaperCommand, run: runFuseReaper, hidden: true},
		{name: keyWorkerCommand, run: runKeyWorker, hidden: true},
		{name: serviceWorkerCommand, run: runServiceWorker, hidden: true},
		{name: workerExecCommand, run: runWorkerExec, hidden: true},
	}}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	var code int
	if filepath.Base(os.Args[0]) == mountHelperName {
		code = mountHelper(ctx, env, os.Args[1:])
	} else {
		code = run(ctx, env, os.Args[1:])
	}
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("kmsagent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&env.configFlag, "config", "", "configuration file (default $KMSAGENT_CONFIG or /etc/kmsagent/agent.toml)")
	root := commandTree()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			root.printUsage(env.stdout, "kmsagent")
			printFlags(env.stdout, fs)
			return exitOK
		}
		fmt.Fprintf(env.stderr, "kmsagent: %s; see kmsagent --help\n", dashes(err.Error()))
		return exitUsage
	}
	err := advise(fs.Args(), root.dispatch(ctx, env, "kmsagent", fs.Args()))
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(env.stderr, "kmsagent: %v\n", err)
	}
	return exitCode(err)
}

func runVersion(ctx context.Context, env *cliEnv, args []string) error {
	if _, err := parseFlags(env, "version", "", args, 0, 0, nil); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "kmsagent %s\n", version)
	return nil
}
