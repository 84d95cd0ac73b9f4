package daemon

import (
	"context"
	"errors"
	"time"

	"kmsagent/kmsclient"
)

// Service is the volume service the daemon drives: the verbs that the
// CLI also uses, with the plaintext keys confined to the workers they
// start. The daemon calls it without holding its own lock, so a slow
// KMS delays one volume, never the table.
type Service interface {
	// Mount unlocks and mounts one volume. Errors wrap kmsclient's
	// sentinels, which decide whether the daemon retries.
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
}

// Errors of the daemon, for errors.Is.
var (
	ErrNotFound = errors.New("no such volume")
	ErrStopping = errors.New("the daemon is stopping")
	ErrGone     = errors.New("mount gone")
)

// ErrorKind names the kind of a mount error for metrics, the status line
// and the control API: a kmsclient error kind, "canceled", or "other".
func ErrorKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{kmsclient.ErrThrottled, "throttled"},
		{kmsclient.ErrUnavailable, "unavailable"},
		{kmsclient.ErrKeyDisabled, "key_disabled"},
		{kmsclient.ErrKeyPendingDeletion, "key_pending_deletion"},
		{kmsclient.ErrKeyNotFound, "key_not_found"},
		{kmsclient.ErrAccessDenied, "access_denied"},
		{kmsclient.ErrInvalidCiphertext, "invalid_ciphertext"},
		{kmsclient.ErrInvalidRequest, "invalid_request"},
		{ErrNotFound, "not_found"},
		{ErrStopping, "stopping"},
		{ErrGone, "gone"},
		{context.Canceled, "canceled"},
		{context.DeadlineExceeded, "timeout"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

// Seams for packages that join later: the state file and the audit log.

// Record is one volume the daemon brought up, as the state file keeps it
// so a restarted daemon knows what it opened and since when.
type Record struct {
	Name, Source, Target string
	Kind                 Kind
	WorkerPID            int
	Device               string
	KeyID, Provider      string
	Since                time.Time
}

// StateStore keeps the records across restarts (agent/state: an atomic
// file under [agent] state_dir).
type StateStore interface {
	Load(ctx context.Context) ([]Record, error)
	Save(ctx context.Context, recs []Record) error
}

// Event is one key unwrap for the audit log (agent/audit): who asked,
// which volume, which CMK, and the result.
type Event struct {
	Time     time.Time
	Actor    string // "boot", "reload", or the peer ("uid=0 pid=42")
	Op       string // "mount", "unmount"
	Volume   string
	KeyID    string
	Provider string
	Result   string // "ok" or ErrorKind
	Error    string
}

// Auditor writes audit events; it must not block for long.
type Auditor interface {
	Audit(Event)
}

// Notifier sends sd_notify(3) messages ("READY=1", "STATUS=...").
type Notifier interface {
	Notify(state string) error
}
