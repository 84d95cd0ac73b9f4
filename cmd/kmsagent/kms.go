package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/kmsconn"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/local"
)

// kmsCommands are the subcommands of kmsagent kms. The key commands manage
// the embedded local KMS ([kms.local] state_dir, or --state-dir).
func kmsCommands() []*command {
	return []*command{
		{name: "create-key", summary: "create a master key; prints its id", run: runCreateKey},
		{name: "list-keys", summary: "list the master keys", run: runListKeys},
		{name: "describe-key", summary: "show a key of the configured provider", run: runDescribeKey},
		{name: "enable-key", summary: "enable a disabled key", run: keyStateCmd("enable-key", (*local.Store).EnableKey)},
		{name: "disable-key", summary: "disable a key: nothing wrapped by it unwraps until it is enabled", run: keyStateCmd("disable-key", (*local.Store).DisableKey)},
		{name: "rotate-key", summary: "add a key version; new wraps use it, old ones still unwrap", run: runRotateKey},
		{name: "schedule-deletion", summary: "disable a key now and delete it after N days (7 to 1096)", run: runScheduleDeletion},
		{name: "cancel-deletion", summary: "cancel a scheduled deletion; the key stays disabled", run: keyStateCmd("cancel-deletion", (*local.Store).CancelDeletion)},
		{name: "serve", summary: "serve the embedded KMS with the Huawei Cloud KMS v1.0 API ([kms.serve])", run: runServe},
	}
}

func loadConfig(env *cliEnv) (*config.Config, error) {
	return config.Load(config.Path(env.configFlag))
}

// openLocal opens the embedded key store: --state-dir, else the configured
// one. The key commands refuse to run against another provider's config,
// where they would silently manage keys nobody uses.
func openLocal(env *cliEnv, stateDir string) (*local.Store, error) {
	if stateDir == "" {
		cfg, err := loadConfig(env)
		if err != nil {
			return nil, err
		}
		if cfg.KMS.Provider != config.ProviderLocal {
			return nil, fmt.Errorf("the kms key commands manage the embedded local KMS, but %s selects provider %q: manage its keys in that provider's console, or pass --state-dir", cfgName(cfg), cfg.KMS.Provider)
		}
		stateDir = cfg.KMS.Local.StateDir
	}
	return local.Open(stateDir)
}

func cfgName(cfg *config.Config) string {
	if cfg.Path == "" {
		return "the default configuration"
	}
	return cfg.Path
}

func stateDirFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "state-dir", "", "key store directory (default: [kms.local] state_dir)")
}

func runCreateKey(ctx context.Context, env *cliEnv, args []string) error {
	var alias, desc, dir string
	if _, err := parseFlags(env, "kms create-key", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&alias, "alias", "", "alias to refer to the key by")
		fs.StringVar(&desc, "description", "", "free text")
		stateDirFlag(fs, &dir)
	}); err != nil {
		return err
	}
	s, err := openLocal(env, dir)
	if err != nil {
		return err
	}
	info, err := s.CreateKey(ctx, alias, desc)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, info.ID)
	return nil
}

func runListKeys(ctx context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	var dir string
	if _, err := parseFlags(env, "kms list-keys", "", args, 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		stateDirFlag(fs, &dir)
	}); err != nil {
		return err
	}
	s, err := openLocal(env, dir)
	if err != nil {
		return err
	}
	keys, err := s.ListKeys(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if keys == nil {
			keys = []kmsclient.KeyInfo{}
		}
		return writeJSON(env, keys)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSTATE\tVERSIONS\tCREATED\tDESCRIPTION")
	for _, k := range keys {
		state := string(k.State)
		if k.State == kmsclient.KeyPendingDeletion {
			state += " (" + k.DeletionDate.Format(time.DateOnly) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", k.ID, orDash(k.Alias), state, k.Versions,
			k.CreatedAt.UTC().Format(time.RFC3339), orDash(oneLine(k.Description)))
	}
	return tw.Flush()
}

func runDescribeKey(ctx context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	var dir string
	pos, err := parseFlags(env, "kms describe-key", "ID|ALIAS", args, 1, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.StringVar(&dir, "state-dir", "", "describe a key of this local key store instead of the configured provider")
	})
	if err != nil {
		return err
	}
	var k kmsclient.KMS
	if dir != "" {
		if k, err = local.Open(dir); err != nil {
			return err
		}
	} else {
		cfg, err := loadConfig(env)
		if err != nil {
			return err
		}
		if k, err = kmsconn.Open(ctx, cfg.KMS); err != nil {
			return err
		}
	}
	info, err := k.DescribeKey(ctx, pos[0])
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env, info)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Key ID", info.ID)
	row("Provider", info.Provider)
	row("Region", info.Region)
	row("Alias", info.Alias)
	row("Description", oneLine(info.Description))
	row("State", string(info.State))
	if !info.CreatedAt.IsZero() {
		row("Created", info.CreatedAt.UTC().Format(time.RFC3339))
	}
	if !info.DeletionDate.IsZero() {
		row("Deletion date", info.DeletionDate.UTC().Format(time.RFC3339))
	}
	if info.Versions > 0 {
		row("Versions", fmt.Sprint(info.Versions))
	}
	return tw.Flush()
}

func keyStateCmd(name string, fn func(*local.Store, context.Context, string) error) func(context.Context, *cliEnv, []string) error {
	return func(ctx context.Context, env *cliEnv, args []string) error {
		var dir string
		pos, err := parseFlags(env, "kms "+name, "ID|ALIAS", args, 1, 1, func(fs *flag.FlagSet) { stateDirFlag(fs, &dir) })
		if err != nil {
			return err
		}
		s, err := openLocal(env, dir)
		if err != nil {
			return err
		}
		return fn(s, ctx, pos[0])
	}
}

func runRotateKey(ctx context.Context, env *cliEnv, args []string) error {
	var dir string
	pos, err := parseFlags(env, "kms rotate-key", "ID|ALIAS", args, 1, 1, func(fs *flag.FlagSet) { stateDirFlag(fs, &dir) })
	if err != nil {
		return err
	}
	s, err := openLocal(env, dir)
	if err != nil {
		return err
	}
	info, err := s.RotateKey(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "key %s now has %d versions; new wraps use version %d\n", info.ID, info.Versions, info.Versions)
	return nil
}

func runScheduleDeletion(ctx context.Context, env *cliEnv, args []string) error {
	var dir string
	days := 0
	pos, err := parseFlags(env, "kms schedule-deletion", "ID|ALIAS --days N", args, 1, 1, func(fs *flag.FlagSet) {
		fs.IntVar(&days, "days", 0, fmt.Sprintf("days until the key is deleted for good (%d to %d)", local.MinDeletionDays, local.MaxDeletionDays))
		stateDirFlag(fs, &dir)
	})
	if err != nil {
		return err
	}
	if days == 0 {
		return usagef("kms schedule-deletion: --days N is required (%d to %d)", local.MinDeletionDays, local.MaxDeletionDays)
	}
	s, err := openLocal(env, dir)
	if err != nil {
		return err
	}
	info, err := s.ScheduleDeletion(ctx, pos[0], days)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "key %s is disabled and will be deleted on %s; every volume wrapped only by it becomes unreadable then (kmsagent kms cancel-deletion %s to undo)\n",
		info.ID, info.DeletionDate.UTC().Format(time.RFC3339), info.ID)
	return nil
}

func writeJSON(env *cliEnv, v any) error {
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
