package source

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/blockdev/luks2"
)

// fakeDev describes one block device of a fake sysfs tree.
type fakeDev struct {
	name      string // sysfs name
	dev       string // "253:16"
	size      string // sectors; "" means 2048
	devName   string // DEVNAME in uevent; "" means name
	serial    string // virtio serial attribute; "" means none
	vpd80     []byte // SCSI device/vpd_pg80
	suspended bool   // a suspended dm device
	slaves    []string
	content   []byte // what the node holds
	noNode    bool   // no node under /dev
}

// fakeTree builds a sysfs and a /dev tree in a temporary directory, with
// regular files as device nodes, and a Resolver that accepts them.
func fakeTree(t *testing.T, devs ...fakeDev) *Resolver {
	t.Helper()
	root := t.TempDir()
	r := &Resolver{
		SysRoot: filepath.Join(root, "sys"),
		DevRoot: filepath.Join(root, "dev"),
		checkNode: func(path string, fi fs.FileInfo, dev uint64) error {
			if !fi.Mode().IsRegular() {
				t.Errorf("fake node %s is not a regular file", path)
			}
			return nil
		},
	}
	write := func(path string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		dir := filepath.Join(r.SysRoot, "class", "block", d.name)
		size := d.size
		if size == "" {
			size = "2048"
		}
		devName := d.devName
		if devName == "" {
			devName = strings.ReplaceAll(d.name, "!", "/")
		}
		maj, min, _ := strings.Cut(d.dev, ":")
		write(filepath.Join(dir, "dev"), []byte(d.dev+"\n"))
		write(filepath.Join(dir, "size"), []byte(size+"\n"))
		write(filepath.Join(dir, "uevent"), []byte("MAJOR="+maj+"\nMINOR="+min+"\nDEVNAME="+devName+"\nDEVTYPE=disk\n"))
		if d.serial != "" {
			write(filepath.Join(dir, "serial"), []byte(d.serial)) // virtio_blk prints no newline
		}
		if d.vpd80 != nil {
			write(filepath.Join(dir, "device", "vpd_pg80"), d.vpd80)
		}
		if d.suspended {
			write(filepath.Join(dir, "dm", "suspended"), []byte("1\n"))
		}
		if err := os.MkdirAll(filepath.Join(dir, "slaves"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range d.slaves {
			if err := os.Symlink("../../"+s, filepath.Join(dir, "slaves", s)); err != nil {
				t.Fatal(err)
			}
		}
		if !d.noNode {
			write(filepath.Join(r.DevRoot, devName), d.content)
		}
	}
	return r
}

// luksHeader returns the start of a LUKS2 device with UUID u, written by
// package luks2 (no keyslots: only the header matters here).
func luksHeader(t testing.TB, u string) []byte { return tokenHeader(t, u, "") }

// tokenHeader is luksHeader with a token of type typ ("" for none).
func tokenHeader(t testing.TB, u, typ string) []byte {
	t.Helper()
	h, vk, err := luks2.Format(luks2.FormatOptions{UUID: u, DataOffset: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	vk.Wipe()
	if typ != "" {
		if err := h.SetToken(0, []byte(`{"type":"`+typ+`","keyslots":[]}`)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "hdr")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1<<20 + 4096); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(f); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vpd80 builds a SCSI unit serial number page.
func vpd80(serial string) []byte {
	return append([]byte{0, 0x80, byte(len(serial) >> 8), byte(len(serial))}, serial...)
}
