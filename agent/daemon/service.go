package daemon

import (
	"context"
	"time"

	"kmsagent/agent/errkind"
)

// Service is the volume service the daemon drives: the verbs that the
// CLI also uses, with the plaintext keys confined to the workers they
// start. The daemon calls it without holding its own lock, so a slow
// KMS delays one volume, never the table.
type Service interface {
	// Mount unlocks and mounts one volume. Errors wrap kmsclient's
	// sentinels, which decide whether the daemon retries. On error the
	// returned Mounted may still carry the KeyID and Provider the
	// volume's token named, for the audit record.
	Mount(ctx context.Context, spec Spec) (Mounted, error)
	// Unmount unmounts a share or closes a LUKS2 volume; target is
	// the mount point, or the volume's name when it has none.
	Unmount(ctx context.Context, target string, lazy bool) error
	// Status is the kernel's view of what is mounted and open.
	Status(ctx context.Context) ([]VolumeStatus, error)
}

// Kind is the type of a volume: KindFUSE or KindLUKS.
type Kind string

const (
	KindFUSE Kind = "fuse"
	KindLUKS Kind = "luks"
)

// Spec says what to mount.
type Spec struct {
	Name     string
	Kind     Kind
	Source   string
	Target   string
	FSType   string
	Options  []string
	ReadOnly bool
}

// Mounted is a volume Mount brought up.
type Mounted struct {
	Spec
	WorkerPID int    // FUSE worker serving the share; 0 for LUKS2
	Device    string // /dev/mapper/NAME of a LUKS2 volume
	KeyID     string // CMK that unwrapped the key
	Provider  string
	Since     time.Time
	// UnlockedBy is who opened a LUKS2 volume the daemon adopted rather
	// than opened: "initramfs" or "cryptsetup"; empty for kmsagent.
	UnlockedBy string
}

// Service states in VolumeStatus.State.
const (
	ServiceMounted  = "mounted"
	ServiceStale    = "stale"    // mount left by a worker that is gone
	ServiceDetached = "detached" // dm device whose disk is gone
)

// VolumeStatus is the service's view of one mounted or open volume.
type VolumeStatus struct {
	Name, Source, Target string
	Kind                 Kind
	State                string
	WorkerPID            int
	KeyID, Provider      string
	Device               string
	// UnlockedBy is who opened a LUKS2 volume when kmsagent did not
	// ("initramfs", "cryptsetup"); UnlockedAt is when, if known.
	UnlockedBy string
	UnlockedAt time.Time
}

// Errors of the daemon, for errors.Is; errkind names their kinds.
var (
	ErrNotFound = errkind.New(errkind.NotFound, "no such volume")
	ErrStopping = errkind.New(errkind.Stopping, "the daemon is stopping")
	ErrGone     = errkind.New(errkind.Gone, "mount gone")
	// ErrAudit means a mount was undone because the audit log could
	// not record it.
	ErrAudit = errkind.New(errkind.Audit, "key use not recorded in the audit log")
)

// ErrorKind names the kind of a mount error for the status, the status
// line, the metrics and the control API: errkind's vocabulary, which the
// audit log's results share.
func ErrorKind(err error) string { return errkind.Of(err) }

// Seams for packages that join later: the state file and the audit log.

// Record is one volume of the table as the state file keeps it: what
// the kernel cannot tell a restarted daemon (since when, which CMK,
// retries, the last error), so its status reads as before the restart.
type Record struct {
	Name      string    `json:"name"`
	Kind      Kind      `json:"kind"`
	Source    string    `json:"source"`
	Target    string    `json:"target,omitempty"`
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	WorkerPID int       `json:"worker_pid,omitempty"`
	Device    string    `json:"device,omitempty"`
	KeyID     string    `json:"key_id,omitempty"`
	Provider  string    `json:"provider,omitempty"`
	Retries   int       `json:"retries,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	ErrorKind string    `json:"error_kind,omitempty"`
	// Discovered marks a volume unlocked on attach without a [[volume]]
	// (auto_unlock_attached).
	Discovered bool `json:"discovered,omitempty"`
}

// StateStore keeps the records across restarts (agent/state: an atomic
// file under [agent] state_dir).
type StateStore interface {
	Load(ctx context.Context) ([]Record, error)
	Save(ctx context.Context, recs []Record) error
}

// Event is one mount attempt (a key unwrap) or one unmount, for the
// audit log (agent/audit): who asked, which volume, which CMK, and the
// result.
type Event struct {
	Time  time.Time
	Actor string // "boot", "attach", "sighup", or the control API's peer ("pid=42 uid=0")
	// UID and PID are who asked: the control API's peer, or the daemon
	// itself for what it does on its own (boot, hotplug, retries).
	UID, PID int
	Op       string // OpMount or OpUnmount
	Volume   string
	Kind     Kind
	KeyID    string // the CMK; empty when the attempt failed before reading the token
	Provider string
	Err      error // nil for success
}

// Operations of an Event.
const (
	OpMount   = "mount"
	OpUnmount = "unmount"
)

// Auditor writes audit events. An error means the event is not on
// record: for a mount the daemon then undoes it (fail closed), unless
// the Auditor fails open and returns nil.
type Auditor interface {
	Audit(ctx context.Context, e Event) error
}

// Notifier sends sd_notify(3) messages ("READY=1", "STATUS=...").
type Notifier interface {
	Notify(state string) error
}
