package crypt

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/keyring"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Step names, reported through Progress and in errors.
const (
	StepLoop     = "attach loop device"
	StepHeader   = "read LUKS2 header"
	StepCheck    = "check for an open mapping"
	StepWorker   = "start unlocker"
	StepUnlock   = "unlock"
	StepKMS      = "KMS unwrap"
	StepKeyslot  = "open keyslot"
	StepActivate = "load dm-crypt table"
	StepMount    = "mount file system"
)

// Steps lists the step names, for parsing them back out of a message.
var Steps = []string{StepLoop, StepHeader, StepCheck, StepWorker, StepUnlock, StepKMS, StepKeyslot, StepActivate, StepMount}

// StepError is a failure of one step of Open or Activate.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func stepErr(step string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*StepError); ok {
		return err
	}
	return &StepError{Step: step, Err: err}
}

// UnlockRequest is what an Unlocker needs: the block device holding the
// volume (a loop device for image files) and the mapping to make.
type UnlockRequest struct {
	Device        string // block device path
	Name          string // device-mapper name
	ReadOnly      bool
	AllowDiscards bool
}

// Activate unlocks the volume on req.Device through its kmsagent token
// and makes the dm-crypt mapping req.Name. It is the only code that holds
// the volume key: the key lives in a secret.Key wiped before Activate
// returns, and reaches the kernel as a logon key on the thread keyring
// of a locked thread, invalidated right after the table load. Progress,
// when not nil, is called at the start of each step.
func Activate(ctx context.Context, ctl *dm.Control, kms kmsclient.KMS, req UnlockRequest, progress func(step string)) error {
	if progress == nil {
		progress = func(string) {}
	}
	progress(StepHeader)
	dev, err := volume.OpenDevice(req.Device, false)
	if err != nil {
		return stepErr(StepHeader, err)
	}
	defer dev.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(dev.Fd()), &st); err != nil {
		return stepErr(StepHeader, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return stepErr(StepHeader, fmt.Errorf("%s is not a block device", req.Device))
	}
	size, err := dev.Seek(0, io.SeekEnd)
	if err != nil {
		return stepErr(StepHeader, err)
	}
	h, err := volume.ReadHeader(dev)
	if err != nil {
		return stepErr(StepHeader, err)
	}
	seg, err := h.Segment()
	if err != nil {
		return stepErr(StepHeader, err)
	}
	uuid, err := dm.CryptUUID(h.UUID(), req.Name)
	if err != nil {
		return stepErr(StepHeader, err)
	}

	// The step that failed is the last one started: reading the token,
	// the KMS round trip or the keyslot.
	current := StepUnlock
	track := func(step string) { current = step; progress(step) }
	track(StepUnlock)
	vk, err := volume.Unlock(ctx, dev, &stepKMS{KMS: kms, progress: track})
	if err != nil {
		return stepErr(current, err)
	}
	defer vk.Wipe()
	return activateKey(ctx, ctl, vk, seg, size, st.Rdev, uuid, req, progress)
}

func activateKey(ctx context.Context, ctl *dm.Control, vk *secret.Key, seg luks2.SegmentInfo, size int64, backing uint64, uuid string, req UnlockRequest, progress func(string)) error {
	progress(StepActivate)
	if seg.KeySize != 0 && seg.KeySize != vk.Len() {
		return stepErr(StepActivate, fmt.Errorf("volume key of %d bytes, but the header says %d", vk.Len(), seg.KeySize))
	}
	t, err := CryptTarget(seg, size, backing, req.Name, vk.Len(), TableOptions{AllowDiscards: req.AllowDiscards})
	if err != nil {
		return stepErr(StepActivate, err)
	}
	spec := dm.Spec{Name: req.Name, UUID: uuid, Targets: []dm.Target{t}, ReadOnly: req.ReadOnly}
	err = keyring.WithSecret(keyring.Description(req.Name), vk, func(string) error {
		_, err := ctl.Activate(ctx, spec)
		return err
	})
	if err != nil {
		return stepErr(StepActivate, err)
	}
	// Belt and braces: what the kernel reports must be the reference.
	if tab, err := ctl.Table(req.Name); err != nil || dm.KeyringOnly(tab) != nil {
		ctl.Deactivate(context.WithoutCancel(ctx), req.Name, dm.RemoveOptions{})
		if err == nil {
			err = dm.KeyringOnly(tab)
		}
		return stepErr(StepActivate, err)
	}
	return nil
}

// stepKMS reports the KMS round trip and the keyslot as separate steps.
type stepKMS struct {
	kmsclient.KMS
	progress func(string)
}

func (s *stepKMS) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	s.progress(StepKMS)
	k, err := s.KMS.Decrypt(ctx, keyID, wrapped, binding)
	if err == nil {
		s.progress(StepKeyslot)
	}
	return k, err
}
