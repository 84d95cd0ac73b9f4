package dm_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/keyring"
	"kmsagent/blockdev/vmtest"
)

// The tests in this file run inside the VM (see TestVMDeviceMapper) and
// skip elsewhere. They run in file order; only the first writes /dev/vda.

// openGuest opens device-mapper and reads the test key.
func openGuest(t *testing.T) (*dm.Control, *secret.Key) {
	t.Helper()
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	c, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key, err := secret.ReadFile(keyPath, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(key.Wipe)
	if key.Len() != 64 {
		t.Fatalf("key is %d bytes, want 64", key.Len())
	}
	return c, key
}

func deviceSectors(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(size) / sector
}

func cryptTarget(t *testing.T, desc, device string, sectors uint64) dm.Target {
	t.Helper()
	tg, err := dm.CryptParams{Cipher: "aes-xts-plain64", KeySize: 64, KeyType: "logon", KeyDesc: desc, Device: device}.Target(sectors)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// activateCrypt opens a crypt device over device with the key handed in
// through the thread keyring, the way the unlock worker does.
func activateCrypt(t *testing.T, c *dm.Control, key *secret.Key, name, device string) dm.DevInfo {
	t.Helper()
	uuid, err := dm.CryptUUID(luksUUID, name)
	if err != nil {
		t.Fatal(err)
	}
	sectors := deviceSectors(t, device)
	var info dm.DevInfo
	err = keyring.WithSecret(keyring.Description(name), key, func(desc string) error {
		var err error
		info, err = c.Activate(t.Context(), dm.Spec{Name: name, UUID: uuid, Targets: []dm.Target{cryptTarget(t, desc, device, sectors)}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func listed(t *testing.T, c *dm.Control, name string) (dm.Device, bool) {
	t.Helper()
	devs, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Name == name {
			return d, true
		}
	}
	return dm.Device{}, false
}

func noAgentKeys(t *testing.T) {
	t.Helper()
	var left []string
	if !vmtest.Eventually(func() bool {
		var err error
		left, err = keyring.Listed(keyring.Prefix)
		return err == nil && len(left) == 0
	}) {
		t.Errorf("kmsagent keys left in /proc/keys: %q", left)
	}
}

// hexRun finds long hex strings, which a table with an inline key has.
var hexRun = regexp.MustCompile(`[0-9a-fA-F]{32,}`)

func TestGuestCryptLifecycle(t *testing.T) {
	c, key := openGuest(t)
	vmtest.Data("dm-version", c.Version().String())
	const name = "test"

	// The key is on the keyring while the table loads, and only then.
	var during []string
	uuid, _ := dm.CryptUUID(luksUUID, name)
	sectors := deviceSectors(t, "/dev/vda")
	err := keyring.WithSecret(keyring.Description(name), key, func(desc string) error {
		during, _ = keyring.Listed(desc)
		_, err := c.Activate(t.Context(), dm.Spec{Name: name, UUID: uuid, Targets: []dm.Target{cryptTarget(t, desc, "/dev/vda", sectors)}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(during) != 1 || !strings.Contains(during[0], "logon") {
		t.Errorf("during the load /proc/keys showed %q, want one logon key", during)
	}
	noAgentKeys(t)

	// The kernel reports the keyring reference, never the key.
	tbl, err := c.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(tbl) != 1 || tbl[0].Type != dm.CryptTarget || tbl[0].Length != sectors {
		t.Fatalf("table %v", tbl)
	}
	vmtest.Data("table", tbl[0].String())
	if !strings.Contains(tbl[0].Params, ":64:logon:kmsagent:test ") {
		t.Errorf("table %q lacks the keyring reference", tbl[0].Params)
	}
	if hexRun.MatchString(tbl[0].Params) || strings.Contains(tbl[0].Params, hex.EncodeToString(key.Bytes())) {
		t.Errorf("table %q holds a hex string", tbl[0].Params)
	}
	if err := dm.KeyringOnly(tbl); err != nil {
		t.Error(err)
	}
	if p, err := dm.ParseCryptParams(tbl[0].Params); err != nil || p.InlineKey || p.KeyDesc != "kmsagent:test" {
		t.Errorf("parsed table %+v, %v", p, err)
	}
	if d, ok := listed(t, c, name); !ok || d.UUID != uuid {
		t.Errorf("device list entry %+v (listed %v), want uuid %s", d, ok, uuid)
	}
	st, err := c.Status(name)
	if err != nil || !st.ActiveTable() || st.Suspended() || st.UUID != uuid {
		t.Fatalf("status %+v, %v", st, err)
	}

	// Write the pattern through the mapping, read it back, and check the
	// backing disk does not hold it.
	writePattern(t, "/dev/mapper/"+name, sectors)
	checkPattern(t, "/dev/mapper/"+name, sectors)
	raw := readSector(t, "/dev/vda", 0)
	if string(raw) == string(pattern(0)) {
		t.Fatal("/dev/vda holds plaintext")
	}

	// Close: suspend, key wipe, remove.
	if st, err := c.Suspend(name); err != nil || !st.Suspended() {
		t.Fatalf("suspend: %+v, %v", st, err)
	}
	if err := c.Message(name, 0, "key wipe"); err != nil {
		t.Fatal(err)
	}
	// With its key gone, dm-crypt reports the table with an all-zero
	// hex key in place of the keyring reference.
	tbl, err = c.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	vmtest.Data("table-after-wipe", tbl[0].String())
	if f := strings.Fields(tbl[0].Params); len(f) < 2 || strings.Trim(f[1], "0") != "" || len(f[1]) != 128 {
		t.Errorf("table after key wipe %q, want an all-zero 64-byte key", tbl[0].Params)
	}
	if dm.KeyringOnly(tbl) == nil {
		t.Error("KeyringOnly accepted the wiped table's hex key")
	}
	// dm-crypt refuses to resume without a key: proof the wipe took.
	if _, err := c.Resume(t.Context(), name); err == nil {
		t.Error("resume after key wipe succeeded")
	}
	if res, err := c.Remove(t.Context(), name, dm.RemoveOptions{}); err != nil || res.Deferred {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	if _, ok := listed(t, c, name); ok {
		t.Error("device still listed after remove")
	}
	if _, err := os.Lstat("/dev/mapper/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/dev/mapper/%s still there: %v", name, err)
	}
	if _, err := c.Status(name); !errors.Is(err, unix.ENXIO) {
		t.Errorf("status after remove: %v, want ENXIO", err)
	}
	noAgentKeys(t)
}

func writePattern(t *testing.T, path string, sectors uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, sectors*sector)
	for n := uint64(0); n < sectors; n++ {
		buf = append(buf, pattern(n)...)
	}
	if _, err := f.Write(buf); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkPattern(t *testing.T, path string, sectors uint64) {
	t.Helper()
	// O_DIRECT would bypass the page cache; dropping it is simpler and
	// makes the read go through dm-crypt.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(b)) != sectors*sector {
		t.Fatalf("read %d bytes from %s, want %d", len(b), path, sectors*sector)
	}
	for n := uint64(0); n < sectors; n++ {
		if string(b[n*sector:(n+1)*sector]) != string(pattern(n)) {
			t.Fatalf("sector %d of %s does not read back", n, path)
		}
	}
}

func readSector(t *testing.T, path string, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, sector)
	if _, err := f.ReadAt(b, n*sector); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGuestLoadNeedsKeyOnSameThread shows why the key goes on the thread
// keyring of the loading thread: a load without the key, or from another
// thread than the one holding it, fails with ENOKEY, and Activate leaves
// no device behind.
func TestGuestLoadNeedsKeyOnSameThread(t *testing.T) {
	c, key := openGuest(t)
	const name = "nokey"
	sectors := deviceSectors(t, "/dev/vdb")
	spec := dm.Spec{Name: name, Targets: []dm.Target{cryptTarget(t, keyring.Description(name), "/dev/vdb", sectors)}}

	_, err := c.Activate(t.Context(), spec)
	if !errors.Is(err, unix.ENOKEY) || !strings.Contains(err.Error(), "key not found") {
		t.Errorf("load without key: %v, want ENOKEY with an explanation", err)
	}
	if _, ok := listed(t, c, name); ok {
		t.Fatal("failed Activate left the device")
	}

	err = keyring.WithSecret(keyring.Description(name), key, func(string) error {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			_, err := c.Activate(t.Context(), spec)
			errc <- err
		}()
		return <-errc
	})
	if !errors.Is(err, unix.ENOKEY) {
		t.Errorf("load from another thread: %v, want ENOKEY", err)
	}
	if _, ok := listed(t, c, name); ok {
		t.Fatal("failed Activate left the device")
	}
	noAgentKeys(t)
}

// TestGuestBusyRemove: a device held open cannot be removed (EBUSY,
// with the open count), Deactivate refuses without touching it, and a
// deferred remove marks it and completes when the holder closes it.
func TestGuestBusyRemove(t *testing.T) {
	c, key := openGuest(t)
	const name = "busy"
	activateCrypt(t, c, key, name, "/dev/vdb")
	holder, err := os.Open("/dev/mapper/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	_, err = c.Remove(t.Context(), name, dm.RemoveOptions{})
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "open count 1") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("remove of a busy device: %v", err)
	}
	_, err = c.Deactivate(t.Context(), name, dm.RemoveOptions{})
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("deactivate of a busy device: %v", err)
	}
	if st, err := c.Status(name); err != nil || st.Suspended() || st.DeferredRemove() {
		t.Fatalf("refused deactivate changed the device: %+v, %v", st, err)
	}
	// The device still works.
	readSector(t, "/dev/mapper/"+name, 1)

	res, err := c.Deactivate(t.Context(), name, dm.RemoveOptions{Deferred: true})
	if err != nil || !res.Deferred {
		t.Fatalf("deferred deactivate: %+v, %v", res, err)
	}
	st, err := c.Status(name)
	if err != nil || !st.DeferredRemove() {
		t.Fatalf("status after deferred remove: %+v, %v", st, err)
	}
	vmtest.Data("deferred-status", fmt.Sprintf("open=%d deferred=%v", st.OpenCount, st.DeferredRemove()))
	holder.Close()
	if !vmtest.Eventually(func() bool { _, ok := listed(t, c, name); return !ok }) {
		t.Fatal("device not removed after its last user closed it")
	}
	pruned, err := c.PruneNodes()
	if err != nil || len(pruned) != 1 || pruned[0] != name {
		t.Errorf("PruneNodes = %v, %v; want [%s]", pruned, err, name)
	}
	if _, err := os.Lstat("/dev/mapper/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node still there: %v", err)
	}
}

// TestGuestDeactivate closes an idle crypt device with the one call the
// CLI will use, then checks nothing is left.
func TestGuestDeactivate(t *testing.T) {
	c, key := openGuest(t)
	const name = "closeme"
	activateCrypt(t, c, key, name, "/dev/vdb")
	if _, err := os.Stat("/dev/mapper/" + name); err != nil {
		t.Fatal(err)
	}
	res, err := c.Deactivate(t.Context(), name, dm.RemoveOptions{Deferred: true})
	if err != nil || res.Deferred {
		t.Fatalf("deactivate: %+v, %v", res, err)
	}
	devs, err := c.List()
	if err != nil || len(devs) != 0 {
		t.Errorf("devices left: %+v, %v", devs, err)
	}
	if entries, _ := os.ReadDir("/dev/mapper"); len(entries) != 1 {
		t.Errorf("/dev/mapper holds %v, want only control", entries)
	}
	noAgentKeys(t)
}
