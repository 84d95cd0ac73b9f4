package service

import (
	"context"
	"strings"
	"time"

	"kmsagent/agent/initramfs"
	"kmsagent/agent/mountinfo"

	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
)

// State is what a volume is doing.
type State string

const (
	StateMounted State = "mounted" // a share served by its worker; a LUKS volume's file system mounted
	StateOpen    State = "open"    // a LUKS volume mapped, its file system not mounted by us
	// StateStale: a share's worker is gone (killed, crashed) and the
	// kernel answers every access with ENOTCONN until the mount is
	// removed.
	StateStale State = "stale"
	// StateDetached: a share unmounted lazily, whose worker serves the
	// files still open, and holds its keys, until the last is closed.
	StateDetached State = "detached"
	// StateClosing: a LUKS volume whose removal is deferred until its
	// last user closes it.
	StateClosing State = "closing"
	// StateUnknown: this user cannot tell.
	StateUnknown State = "unknown"
)

// VolumeStatus is one volume as the kernel and the worker records show
// it.
type VolumeStatus struct {
	Name      string `json:"name,omitempty"`
	Kind      Kind   `json:"kind"`
	Source    string `json:"source"` // cipher directory; a LUKS volume's backing device
	Target    string `json:"target"` // mount point, "" for an open LUKS volume not mounted
	State     State  `json:"state"`
	WorkerPID int    `json:"worker_pid,omitempty"`
	// OpenFiles counts the open files on a detached share;
	// OpenFilesPartial says some processes' could not be seen.
	OpenFiles        int    `json:"open_files,omitempty"`
	OpenFilesPartial bool   `json:"open_files_partial,omitempty"`
	UUID             string `json:"uuid,omitempty"` // the share's or the LUKS volume's
	KeyID            string `json:"kms_key_id,omitempty"`
	Provider         string `json:"kms_provider,omitempty"`
	Device           string `json:"device,omitempty"` // /dev/mapper/NAME
	Options          string `json:"options,omitempty"`
	// Error is why the share's envelope could not be read; Err is the
	// same as an error value.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
	// Block is a LUKS volume's device-mapper view.
	Block *crypt.Info `json:"block,omitempty"`
	// UnlockedBy is who opened a LUKS volume when kmsagent did not:
	// "initramfs" (the keyscript, which noted when, in UnlockedAt) or
	// "cryptsetup" (anything else with a kmsagent token's key).
	UnlockedBy string    `json:"unlocked_by,omitempty"`
	UnlockedAt time.Time `json:"unlocked_at,omitzero"`
}

// Status lists the mounted shares (and detached ones still served) and
// the open LUKS volumes. A host without device-mapper has no LUKS
// volumes to show, which is not an error.
func (s *Service) Status(ctx context.Context) ([]VolumeStatus, error) {
	table := mountinfo.Self
	if s.o.Confined {
		table = mountinfo.Host
	}
	mounts, err := share.StatusOf(table, s.o.RunDir)
	if err != nil {
		return nil, err
	}
	out := []VolumeStatus{}
	for _, m := range mounts {
		v := VolumeStatus{Kind: KindShare, Source: m.CipherDir, Target: m.Mountpoint, Options: m.Options, State: shareState(m.State)}
		if m.Worker != nil {
			v.WorkerPID = m.Worker.PID
		}
		if m.State == share.StateDetached {
			v.OpenFiles, v.OpenFilesPartial = m.OpenFiles, m.OpenFilesPartial
		}
		if e, err := envelope.Read(m.CipherDir); err != nil {
			v.Error, v.Err = err.Error(), err
		} else {
			v.UUID, v.Provider, v.KeyID = e.VolumeUUID, e.KMS.Provider, e.KMS.KeyID
		}
		out = append(out, v)
	}
	ctl, err := dm.Open()
	if err != nil {
		return out, nil
	}
	defer ctl.Close()
	infos, err := crypt.ListLUKS2(ctl)
	if err != nil {
		return out, nil
	}
	for _, info := range infos {
		v := VolumeStatus{Name: info.Name, Kind: KindLUKS, Source: info.Backing, UUID: info.LUKSUUID, Device: "/dev/mapper/" + info.Name, State: StateOpen, Block: &info}
		if info.BackingFile != "" {
			v.Source = info.BackingFile
		}
		if len(info.Mountpoints) > 0 {
			v.Target, v.State = info.Mountpoints[0], StateMounted
		}
		if info.Deferred {
			v.State = StateClosing
		}
		v.Provider, v.KeyID = luksKeyRef(v.Source)
		if info.Cryptsetup && !s.unlockedElsewhere(&v) {
			continue // not a kmsagent volume, or not one this user can tell
		}
		out = append(out, v)
	}
	return out, nil
}

// unlockedElsewhere fills in who opened a LUKS2 volume that cryptsetup
// mapped, and reports whether it is a kmsagent volume: its header has a
// kmsagent token, or the initramfs noted unlocking it through the KMS.
func (s *Service) unlockedElsewhere(v *VolumeStatus) bool {
	dir := s.o.InitramfsRecordDir
	if dir == "" {
		dir = initramfs.RecordDir
	}
	if r, err := initramfs.ReadRecord(dir, v.Name); err == nil && strings.EqualFold(r.UUID, v.UUID) {
		v.UnlockedBy, v.UnlockedAt = "initramfs", r.Time
		if v.KeyID == "" {
			v.Provider, v.KeyID = r.Provider, r.KeyID
		}
		return true
	}
	if v.KeyID == "" {
		return false
	}
	v.UnlockedBy = "cryptsetup"
	return true
}

// luksKeyRef names the KMS key of the first kmsagent token of the LUKS2
// volume at path; empty when there is none or it cannot be read (status
// run by a user who may not read the device).
func luksKeyRef(path string) (provider, keyID string) {
	f, err := volume.OpenDevice(path, false)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	h, err := volume.ReadHeader(f)
	if err != nil {
		return "", ""
	}
	for _, id := range h.TokenIDs() {
		raw, err := h.Token(id)
		if err != nil || token.TypeOf(raw) != token.Type {
			continue
		}
		if t, err := token.Parse(raw); err == nil {
			return t.KMS.Provider, t.KMS.KeyID
		}
	}
	return "", ""
}

func shareState(st share.State) State {
	switch st {
	case share.StateRunning:
		return StateMounted
	case share.StateStale:
		return StateStale
	case share.StateDetached:
		return StateDetached
	}
	return StateUnknown
}
