package daemon

import (
	"context"

	"kmsagent/agent/audit"
)

// AuditLog is the Auditor that writes agent/audit's JSON-lines log: one
// record per mount attempt (op "unwrap": the attempt asks the KMS for
// the volume's key) and one per unmount.
//
// Whether a record that cannot be written fails the mount is the Log's
// setting (audit.Options.FailOpen): failing closed, Audit returns the
// error and the daemon closes the volume again; failing open, the Log
// returns nil and reports the drop through its Report function.
type AuditLog struct {
	Log *audit.Log
	// Lookup completes a caller with its command and unit;
	// audit.LookupCaller when nil.
	Lookup func(uid, pid int) audit.Caller
}

// OpUnmountRecord is the audit record's op for an unmount; mounts are
// audit.OpUnwrap.
const OpUnmountRecord = "unmount"

// ActorInitramfs is the actor of a key use by the initramfs, which the
// daemon audits when it adopts the volume; its record has uid 0, pid 0
// and comm "initramfs".
const ActorInitramfs = "initramfs"

// Audit writes e as one record.
func (a AuditLog) Audit(ctx context.Context, e Event) error {
	lookup := a.Lookup
	if lookup == nil {
		lookup = audit.LookupCaller
	}
	op := audit.OpUnwrap
	if e.Op == OpUnmount {
		op = OpUnmountRecord
	}
	caller := lookup(e.UID, e.PID)
	if e.Actor == ActorInitramfs && e.PID == 0 {
		// No process of this system: the keyscript in the initramfs.
		caller.Comm = ActorInitramfs
	}
	r := audit.Record{
		Time:     e.Time,
		Caller:   caller,
		Volume:   e.Volume,
		Kind:     auditKind(e.Kind),
		CMK:      e.KeyID,
		Provider: e.Provider,
		Op:       op,
	}.WithError(e.Err)
	return a.Log.Write(ctx, r)
}

func auditKind(k Kind) audit.Kind {
	if k == KindFUSE {
		return audit.KindShare
	}
	return audit.Kind(k)
}
