package share

import (
	"testing"

	"kmsagent/agent/tstest"
)

// TestRemoveStaleAlreadyGone: a dead worker's mount is removed by
// whoever comes first, its reaper or a mount, unmount or status that
// found it stale; the one that comes second finds it gone (EINVAL from
// umount2) and must not fail, or the daemon fails the share instead of
// mounting it again.
func TestRemoveStaleAlreadyGone(t *testing.T) {
	tstest.NeedRoot(t, "unmounts")
	dir := t.TempDir()
	// Not mounted, as after the reaper's unmount; the mount ID is not
	// in the table.
	m := Mount{Mountpoint: dir, CipherDir: t.TempDir(), ID: 1 << 30, Dev: 1 << 40}
	if err := removeStale(t.TempDir(), m, nil); err != nil {
		t.Fatalf("removing a stale mount that is already gone: %v", err)
	}
}
