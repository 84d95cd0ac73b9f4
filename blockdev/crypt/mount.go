package crypt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/agent/mountinfo"
)

// mountFlags maps the -o options that are mount(2) flags; anything else
// is passed to the file system as data.
var mountFlags = map[string]struct {
	set   bool
	value uintptr
}{
	"ro":          {true, unix.MS_RDONLY},
	"rw":          {false, unix.MS_RDONLY},
	"nosuid":      {true, unix.MS_NOSUID},
	"suid":        {false, unix.MS_NOSUID},
	"nodev":       {true, unix.MS_NODEV},
	"dev":         {false, unix.MS_NODEV},
	"noexec":      {true, unix.MS_NOEXEC},
	"exec":        {false, unix.MS_NOEXEC},
	"sync":        {true, unix.MS_SYNCHRONOUS},
	"async":       {false, unix.MS_SYNCHRONOUS},
	"noatime":     {true, unix.MS_NOATIME},
	"atime":       {false, unix.MS_NOATIME},
	"nodiratime":  {true, unix.MS_NODIRATIME},
	"relatime":    {true, unix.MS_RELATIME},
	"norelatime":  {false, unix.MS_RELATIME},
	"strictatime": {true, unix.MS_STRICTATIME},
	"lazytime":    {true, unix.MS_LAZYTIME},
	"dirsync":     {true, unix.MS_DIRSYNC},
	"defaults":    {false, 0},
}

// ParseMountOptions splits -o options into mount(2) flags and the file
// system's data string, as mount(8) does.
func ParseMountOptions(opts string, readOnly bool) (uintptr, string, error) {
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if strings.ContainsAny(o, " \t\n\x00") {
			return 0, "", fmt.Errorf("mount option %q contains a blank", o)
		}
		if f, ok := mountFlags[o]; ok {
			if f.set {
				flags |= f.value
			} else {
				flags &^= f.value
			}
			continue
		}
		data = append(data, o)
	}
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return flags, strings.Join(data, ","), nil
}

// DetectFS names the file system on dev from its superblock magic: the
// ones an encrypted data volume usually carries. "" means unknown.
func DetectFS(dev io.ReaderAt) (string, error) {
	buf := make([]byte, 0x10048)
	n, err := dev.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	buf = buf[:n]
	at := func(off int, magic string) bool {
		return len(buf) >= off+len(magic) && string(buf[off:off+len(magic)]) == magic
	}
	switch {
	case len(buf) >= 0x43a && binary.LittleEndian.Uint16(buf[0x438:]) == 0xef53:
		// ext2, ext3 and ext4 share the magic; the ext4 driver mounts all.
		return "ext4", nil
	case at(0, "XFSB"):
		return "xfs", nil
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", nil
	case at(3, "EXFAT   "):
		return "exfat", nil
	case at(0x52, "FAT32   "), at(0x36, "FAT16   "), at(0x36, "FAT12   "):
		return "vfat", nil
	case len(buf) >= 0x41c && bytes.Equal(buf[0x400:0x404], []byte{0x10, 0x20, 0xf5, 0xf2}):
		return "f2fs", nil
	}
	return "", nil
}

// mountsOf returns the mount points of device dev, innermost last.
func mountsOf(dev uint64) ([]string, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Dev == dev {
			out = append(out, m.Mountpoint)
		}
	}
	return out, nil
}
