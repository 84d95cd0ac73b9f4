package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kmsagent/agent/initramfs"
	"kmsagent/blockdev/volume"
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
		fs.StringVar(&askpass, "askpass", askpass, "program that asks for the recovery passphrase when the KMS refuses the key; empty for none")
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
	pass, cmk, err := initramfs.Unlock(ctx, dev, kms, initramfs.Options{Name: name, Console: env.stderr})
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
