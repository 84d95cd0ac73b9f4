package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"kmsagent/agent/uuid"
)

// Defaults of [agent].
const (
	DefaultAgentSocket = "/run/kmsagent/agent.sock"
	DefaultStateDir    = "/var/lib/kmsagent/agent"
	DefaultAuditLog    = "/var/log/kmsagent/audit.log"
	// DefaultCryptsetupSocket is the key socket crypttab lines name.
	DefaultCryptsetupSocket = "/run/kmsagent/cryptsetup.sock"
	DefaultCrypttab         = "/etc/crypttab"
)

// Volume types of [[volume]].
const (
	VolumeLUKS = "luks"
	VolumeFUSE = "fuse"
)

// Agent configures the daemon, `kmsagent run`.
type Agent struct {
	// Socket is the control API's unix socket, used when systemd passes
	// none.
	Socket string `toml:"socket"`
	// StateDir holds the daemon's state file.
	StateDir string `toml:"state_dir"`
	// AdminGroup may change state over the socket besides root; ""
	// for root only. Everyone who can connect may read the status.
	AdminGroup string `toml:"admin_group"`
	AuditLog   string `toml:"audit_log"`
	// AuditFailOpen keeps unlocking volumes when the audit log cannot
	// be written (a full disk), counting the records lost; by default a
	// mount whose key use cannot be recorded is undone.
	AuditFailOpen bool `toml:"audit_fail_open"`
	// CloseOnStop closes every volume when the daemon stops; by default
	// mounts outlive it, so a restart does not cut I/O.
	CloseOnStop bool `toml:"close_on_stop"`
	// AutoUnlockAttached unlocks a kmsagent LUKS2 volume when its disk
	// is attached, whether or not a [[volume]] names it.
	AutoUnlockAttached bool `toml:"auto_unlock_attached"`
	// RetryMinDelay and RetryMaxDelay bound the wait between a
	// volume's attempts while the KMS throttles, is unreachable or
	// answers nonsense: it doubles from the first to the second, with
	// jitter.
	RetryMinDelay Duration `toml:"retry_min_delay"`
	RetryMaxDelay Duration `toml:"retry_max_delay"`
	// CryptsetupSocket serves the keys of the volumes in Crypttab to
	// systemd-cryptsetup (package cryptkey), used when systemd passes
	// none; "" for no key socket.
	CryptsetupSocket string `toml:"cryptsetup_socket"`
	// Crypttab is where the key socket looks up volume names.
	Crypttab string `toml:"crypttab"`
}

// Volume is one [[volume]]: a share or LUKS2 volume the daemon manages.
type Volume struct {
	Name string `toml:"name"`
	Type string `toml:"type"`
	// Source is a path (the cipher directory of a share, the device or
	// image of a LUKS2 volume), UUID=<uuid> (a LUKS2 volume by its header
	// UUID) or evs:<id> (a cloud disk by its volume id).
	Source string `toml:"source"`
	// Target is the mount point; a LUKS2 volume without one is only
	// opened (/dev/mapper/NAME).
	Target   string   `toml:"target"`
	FSType   string   `toml:"fs_type"`
	Options  []string `toml:"options"`
	Auto     bool     `toml:"auto"`
	ReadOnly bool     `toml:"readonly"`
}

// Errors of volume validation, for errors.Is.
var (
	ErrVolumeName   = errors.New("invalid volume name")
	ErrVolumeType   = errors.New("invalid volume type")
	ErrVolumeSource = errors.New("invalid volume source")
	ErrVolumePath   = errors.New("not an absolute clean path")
	ErrDuplicate    = errors.New("duplicate")
)

// The name rules are loops, not regular expressions: a bounded
// repetition such as {0,62} compiles to a copy of its class per
// repetition, some 200 KiB of heap made at start-up by the daemon and by
// every worker, which all load configuration.

// validVolumeName: what a dm device, a unit instance and a log line can
// carry without quoting, [A-Za-z0-9][A-Za-z0-9_.-]{0,62}.
func validVolumeName(s string) bool {
	return validName(s, 63, isAlnum, func(c byte) bool { return isAlnum(c) || c == '_' || c == '.' || c == '-' })
}

// validEVSID: a cloud disk id, [A-Za-z0-9][A-Za-z0-9-]{0,127}.
func validEVSID(s string) bool {
	return validName(s, 128, isAlnum, func(c byte) bool { return isAlnum(c) || c == '-' })
}

// validFSType: a file system type as mount(2) takes it,
// [a-z0-9][a-z0-9._-]{0,31}.
func validFSType(s string) bool {
	lower := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
	return validName(s, 32, lower, func(c byte) bool { return lower(c) || c == '_' || c == '.' || c == '-' })
}

// validName reports whether s has 1 to maxLen bytes, the first accepted
// by first and the others by rest.
func validName(s string, maxLen int, first, rest func(byte) bool) bool {
	if s == "" || len(s) > maxLen || !first(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !rest(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func (a *Agent) validate() error {
	for _, p := range []struct {
		key, v   string
		optional bool
	}{{"socket", a.Socket, false}, {"state_dir", a.StateDir, false}, {"audit_log", a.AuditLog, false}, {"cryptsetup_socket", a.CryptsetupSocket, true}, {"crypttab", a.Crypttab, false}} {
		if p.optional && p.v == "" {
			continue
		}
		if !absClean(p.v) {
			return fmt.Errorf("agent.%s = %q: %w; write it like %q", p.key, p.v, ErrVolumePath, "/var/lib/kmsagent/agent")
		}
	}
	if a.RetryMinDelay < Duration(100*time.Millisecond) || a.RetryMinDelay > a.RetryMaxDelay || a.RetryMaxDelay > Duration(24*time.Hour) {
		return fmt.Errorf("agent.retry_min_delay = %q, retry_max_delay = %q: want durations from 100ms to 24h, the minimum not above the maximum, e.g. \"2s\" and \"5m\"", a.RetryMinDelay.Std(), a.RetryMaxDelay.Std())
	}
	if strings.ContainsAny(a.AdminGroup, " \t\n:") {
		return fmt.Errorf("agent.admin_group = %q is not a group name", a.AdminGroup)
	}
	return nil
}

// ValidateVolumes checks each [[volume]] and that no two share a name or
// a target. Errors name the volume and the key.
func ValidateVolumes(vols []Volume) error {
	names := map[string]int{}
	targets := map[string]string{}
	for i := range vols {
		v := &vols[i]
		if err := v.Validate(); err != nil {
			if v.Name == "" || !validVolumeName(v.Name) {
				return fmt.Errorf("volume[%d]: %w", i, err)
			}
			return err
		}
		if j, ok := names[v.Name]; ok {
			return fmt.Errorf("volume %q: name: %w: volume[%d] and volume[%d] are both called %s", v.Name, ErrDuplicate, j, i, v.Name)
		}
		names[v.Name] = i
		if v.Target != "" {
			if other, ok := targets[v.Target]; ok {
				return fmt.Errorf("volume %q: target: %w: %s is also the target of volume %q", v.Name, ErrDuplicate, v.Target, other)
			}
			targets[v.Target] = v.Name
		}
	}
	return nil
}

// Validate checks one volume on its own.
func (v *Volume) Validate() error {
	if !validVolumeName(v.Name) {
		return fmt.Errorf("name = %q: %w: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", v.Name, ErrVolumeName)
	}
	where := fmt.Sprintf("volume %q", v.Name)
	switch v.Type {
	case VolumeLUKS, VolumeFUSE:
	default:
		return fmt.Errorf("%s: type = %q: %w: want \"luks\" or \"fuse\"", where, v.Type, ErrVolumeType)
	}
	if err := v.validateSource(); err != nil {
		return fmt.Errorf("%s: source = %q: %w", where, v.Source, err)
	}
	if v.Target == "" && v.Type == VolumeFUSE {
		return fmt.Errorf("%s: target is required for a share: the directory to mount it on", where)
	}
	if v.Target != "" && !absClean(v.Target) {
		return fmt.Errorf("%s: target = %q: %w", where, v.Target, ErrVolumePath)
	}
	if v.FSType != "" {
		if v.Type == VolumeFUSE {
			return fmt.Errorf("%s: fs_type = %q: a share is always a FUSE file system; remove fs_type", where, v.FSType)
		}
		if !validFSType(v.FSType) {
			return fmt.Errorf("%s: fs_type = %q is not a file system type such as \"ext4\"", where, v.FSType)
		}
		if v.Target == "" {
			return fmt.Errorf("%s: fs_type = %q needs a target to mount on", where, v.FSType)
		}
	}
	for _, o := range v.Options {
		if o == "" || strings.ContainsAny(o, ", \t\n") {
			return fmt.Errorf("%s: options: %q is not one mount option; list them one per string, e.g. [\"noatime\", \"nodev\"]", where, o)
		}
	}
	return nil
}

func (v *Volume) validateSource() error {
	switch {
	case v.Source == "":
		return fmt.Errorf("%w: source is required", ErrVolumeSource)
	case strings.HasPrefix(v.Source, "UUID="):
		if v.Type == VolumeFUSE {
			return fmt.Errorf("%w: a share's source is its cipher directory, not a UUID", ErrVolumeSource)
		}
		if _, err := uuid.Parse(strings.TrimPrefix(v.Source, "UUID=")); err != nil {
			return fmt.Errorf("%w: UUID= needs the LUKS2 header UUID in 8-4-4-4-12 form", ErrVolumeSource)
		}
	case strings.HasPrefix(v.Source, "evs:"):
		if v.Type == VolumeFUSE {
			return fmt.Errorf("%w: a share's source is its cipher directory, not a disk", ErrVolumeSource)
		}
		if !validEVSID(strings.TrimPrefix(v.Source, "evs:")) {
			return fmt.Errorf("%w: evs: needs the disk's volume id, letters, digits and dashes, e.g. evs:5a7f3a4e-1111-4000-8000-000000000000", ErrVolumeSource)
		}
	case !absClean(v.Source):
		return fmt.Errorf("%w: want an absolute path, UUID=<uuid> or evs:<volume id>", ErrVolumeSource)
	}
	return nil
}

func absClean(p string) bool {
	return p != "" && filepath.IsAbs(p) && filepath.Clean(p) == p && !strings.ContainsRune(p, 0)
}
