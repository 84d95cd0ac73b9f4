package source

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// blockDev is one entry of /sys/class/block.
type blockDev struct {
	name    string // sysfs name: "vdb", "cciss!c0d0"
	dir     string // its sysfs directory
	dev     uint64 // device number
	devName string // node relative to /dev: "vdb", "cciss/c0d0"
}

func (r *Resolver) classBlock() string { return filepath.Join(r.sysRoot(), "class", "block") }

// devices lists the block devices sysfs knows, disks and partitions.
func (r *Resolver) devices() ([]blockDev, error) {
	ents, err := os.ReadDir(r.classBlock())
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w (is sysfs mounted on %s?)", err, r.sysRoot())
	}
	var out []blockDev
	for _, e := range ents {
		d, err := r.device(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// device reads the sysfs entry of the block device with sysfs name name.
func (r *Resolver) device(name string) (blockDev, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return blockDev{}, fmt.Errorf("%q is not a block device name", name)
	}
	d := blockDev{name: name, dir: filepath.Join(r.classBlock(), name)}
	b, err := os.ReadFile(filepath.Join(d.dir, "dev"))
	if err != nil {
		return blockDev{}, err
	}
	if d.dev, err = parseDevNum(string(b)); err != nil {
		return blockDev{}, fmt.Errorf("%s: %w", filepath.Join(d.dir, "dev"), err)
	}
	// The kernel writes "/" in names as "!" in sysfs; DEVNAME has the
	// node's real name.
	d.devName = strings.ReplaceAll(name, "!", "/")
	if b, err := os.ReadFile(filepath.Join(d.dir, "uevent")); err == nil {
		if n := ueventValue(b, "DEVNAME"); n != "" && filepath.IsLocal(n) {
			d.devName = n
		}
	}
	return d, nil
}

// parseDevNum parses sysfs's "MAJOR:MINOR\n".
func parseDevNum(s string) (uint64, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("device number %.32q is not MAJOR:MINOR", s)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// ueventValue returns the value of key in a sysfs uevent file
// (KEY=VALUE lines), or "".
func ueventValue(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && k == key {
			return v
		}
	}
	return ""
}

// attr reads a sysfs attribute, trimmed; "" when it does not exist.
func (d blockDev) attr(name string) string {
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// serials returns the serial numbers the disk reports: virtio-blk's
// serial attribute and a SCSI disk's unit serial number.
func (d blockDev) serials() []string {
	var out []string
	if s := strings.Trim(d.attr("serial"), " \x00"); s != "" {
		out = append(out, s)
	}
	if b, err := os.ReadFile(filepath.Join(d.dir, "device", "vpd_pg80")); err == nil {
		if s := vpdSerial(b); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// vpdSerial extracts the product serial number from a SCSI VPD page 0x80
// (SPC-4 7.8.16): peripheral byte, page code 0x80, 16-bit big-endian
// length, then that many bytes of ASCII, often space-padded.
func vpdSerial(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b)-4 {
		return ""
	}
	s := strings.Trim(string(b[4:4+n]), " \x00")
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return s
}

// probeable says whether reading the device is useful and safe: not
// empty, not a suspended device-mapper device (reads block until resume).
func (d blockDev) probeable() bool {
	if d.attr("size") == "0" {
		return false
	}
	return d.attr("dm/suspended") != "1"
}

// holds reports whether d is stacked directly on o (o is in d's slaves).
func (d blockDev) holds(o blockDev) bool {
	_, err := os.Lstat(filepath.Join(d.dir, "slaves", o.name))
	return err == nil
}
