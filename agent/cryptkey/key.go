package cryptkey

import (
	"context"
	"errors"
	"fmt"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Passphrase returns the passphrase of dev's kmsagent keyslot: the data
// key of its token, unwrapped by the KMS under the volume's UUID and
// encoded by token.Passphrase, exactly the bytes cryptsetup needs. With
// several kmsagent tokens the first that unwraps wins. The CMK of the
// token used (or of the last one tried) is returned for the audit record
// even on error. The caller wipes the key.
//
// The keyslot is not opened here: that would put the volume key in this
// process, and cryptsetup checks the passphrase anyway.
func Passphrase(ctx context.Context, dev volume.Device, kms kmsclient.KMS) (*secret.Key, token.KMS, error) {
	h, err := volume.ReadHeader(dev)
	if err != nil {
		return nil, token.KMS{}, err
	}
	var (
		used token.KMS
		errs []error
	)
	for _, id := range h.TokenIDs() {
		raw, err := h.Token(id)
		if err != nil {
			return nil, used, err
		}
		if token.TypeOf(raw) != token.Type {
			continue
		}
		t, err := token.Parse(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("token %d: %w", id, err))
			continue
		}
		used = t.KMS
		if t.Binding != h.UUID() {
			errs = append(errs, fmt.Errorf("token %d is bound to volume %s but the header's UUID is %s: it was copied from another volume", id, t.Binding, h.UUID()))
			continue
		}
		if p := kms.Provider(); p != t.KMS.Provider {
			errs = append(errs, fmt.Errorf("token %d was made with KMS provider %q but the agent uses %q", id, t.KMS.Provider, p))
			continue
		}
		dk, err := kms.Decrypt(ctx, t.KMS.KeyID, t.WrappedKey, t.Binding)
		if err != nil {
			errs = append(errs, fmt.Errorf("unwrap the data key of token %d (KMS key %s): %w", id, t.KMS.KeyID, err))
			continue
		}
		pass, err := token.Passphrase(dk)
		dk.Wipe()
		if err != nil {
			errs = append(errs, fmt.Errorf("token %d: %w", id, err))
			continue
		}
		return pass, used, nil
	}
	if len(errs) == 0 {
		return nil, used, volume.ErrNotEnrolled
	}
	return nil, used, errors.Join(errs...)
}
