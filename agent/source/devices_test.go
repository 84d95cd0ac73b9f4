package source

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKMSVolume: only a LUKS2 header with a kmsagent token is a kmsagent
// volume.
func TestKMSVolume(t *testing.T) {
	r := fakeTree(t,
		fakeDev{name: "vdb", dev: "253:16", content: tokenHeader(t, uuidA, "kmsagent")},
		fakeDev{name: "vdc", dev: "253:32", content: tokenHeader(t, uuidB, "systemd-tpm2")},
		fakeDev{name: "vdd", dev: "253:48", content: luksHeader(t, uuidB)},
		fakeDev{name: "vde", dev: "253:64", content: make([]byte, 8192)},
		fakeDev{name: "vdf", dev: "253:80", size: "0"},
	)
	for dev, want := range map[string]string{"vdb": uuidA, "vdc": "", "vdd": "", "vde": "", "vdf": "", "vdx": ""} {
		got, err := r.KMSVolume(context.Background(), dev)
		if got != want || err != nil {
			t.Errorf("KMSVolume(%s) = %q, %v; want %q", dev, got, err, want)
		}
	}
}

// TestBelow: a mapping's bottom devices follow its slaves down; a disk is
// its own bottom; Devices lists them all.
func TestBelow(t *testing.T) {
	r := fakeTree(t,
		fakeDev{name: "vdb", dev: "253:16"},
		fakeDev{name: "vdb1", dev: "253:17"},
		fakeDev{name: "dm-0", dev: "252:0", slaves: []string{"vdb1"}},
		fakeDev{name: "dm-1", dev: "252:1", slaves: []string{"dm-0"}},
	)
	// /sys/dev/block/MAJ:MIN links to each device's directory.
	byNum := filepath.Join(r.SysRoot, "dev", "block")
	if err := os.MkdirAll(byNum, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, num := range map[string]string{"vdb": "253:16", "vdb1": "253:17", "dm-0": "252:0", "dm-1": "252:1"} {
		if err := os.Symlink(filepath.Join("..", "..", "class", "block", name), filepath.Join(byNum, num)); err != nil {
			t.Fatal(err)
		}
	}
	vdb1 := Device{Name: "vdb1", Dev: unix.Mkdev(253, 17)}
	for dev, want := range map[uint64][]Device{
		unix.Mkdev(252, 1):  {vdb1},
		unix.Mkdev(252, 0):  {vdb1},
		unix.Mkdev(253, 16): {{Name: "vdb", Dev: unix.Mkdev(253, 16)}},
	} {
		got, err := r.Below(dev)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Below(%d:%d) = %v, %v; want %v", unix.Major(dev), unix.Minor(dev), got, err, want)
		}
	}
	if _, err := r.Below(unix.Mkdev(9, 9)); err == nil {
		t.Error("Below of a device that does not exist: no error")
	}
	devs, err := r.Devices()
	if err != nil || len(devs) != 4 || !slices.Contains(devs, vdb1) {
		t.Errorf("Devices() = %v, %v", devs, err)
	}
}
