package huaweicloud

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

var keyStates = map[string]kmsclient.KeyState{
	wire.KeyStateEnabled:         kmsclient.KeyEnabled,
	wire.KeyStateDisabled:        kmsclient.KeyDisabled,
	wire.KeyStatePendingDeletion: kmsclient.KeyPendingDeletion,
	wire.KeyStatePendingImport:   kmsclient.KeyPendingImport,
}

// DescribeKey calls describe-key.
func (c *Client) DescribeKey(ctx context.Context, keyID string) (*kmsclient.KeyInfo, error) {
	const op = "describe-key"
	if err := c.checkKeyID(op, keyID); err != nil {
		return nil, err
	}
	body, err := json.Marshal(wire.DescribeKeyRequest{KeyID: keyID})
	if err != nil {
		return nil, c.fail(op, keyID, kmsclient.ErrInvalidRequest, "encode request: %v", err)
	}
	resp, reqID, err := c.call(ctx, op, keyID, wire.OpDescribeKey, body, false)
	if err != nil {
		return nil, err
	}
	var out wire.DescribeKeyResponse
	if err := json.Unmarshal(resp, &out); err != nil {
		return nil, c.badResponse(op, keyID, reqID, "describe-key: %v", err)
	}
	k := out.KeyInfo
	if k.KeyID == "" {
		return nil, c.badResponse(op, keyID, reqID, "describe-key: no key_info")
	}
	state, ok := keyStates[k.KeyState]
	if !ok {
		// Pending activation, frozen and states added later: not usable.
		state = kmsclient.KeyUnavailable
	}
	return &kmsclient.KeyInfo{
		ID:           k.KeyID,
		Alias:        k.KeyAlias,
		Description:  k.KeyDescription,
		State:        state,
		CreatedAt:    parseEpoch(k.CreationDate),
		DeletionDate: parseEpoch(k.ScheduledDeletionDate),
		Provider:     providerName,
		Region:       c.cfg.Region,
	}, nil
}

// parseEpoch reads a KMS date. The reference says seconds since the epoch
// but the service and its examples use milliseconds; tell them apart by
// size (1e11 seconds is the year 5138).
func parseEpoch(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	if n >= 1e11 {
		return time.UnixMilli(n).UTC()
	}
	return time.Unix(n, 0).UTC()
}
