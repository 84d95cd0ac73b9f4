// Package mountinfo reads the kernel's mount table, /proc/self/mountinfo,
// which both share mounts and block volumes are found in.
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one mount.
type Entry struct {
	ID         int    // mount ID, as in /proc/PID/fdinfo's mnt_id
	Dev        uint64 // st_dev of the mounted file system
	Mountpoint string
	Options    string // per-mount options (rw, nosuid, ...)
	FSType     string // e.g. ext4, fuse.kmsagent
	Source     string // the device, or a FUSE file system's fsname
}

// Mount tables.
const (
	// Self is this process's mount namespace's table.
	Self = "/proc/self/mountinfo"
	// Host is init's: the host's, for a process confined to a mount
	// namespace of its own, whose copies of the host's mounts have
	// other mount IDs.
	Host = "/proc/1/mountinfo"
)

// Read parses /proc/self/mountinfo.
func Read() ([]Entry, error) { return ReadFile(Self) }

// ReadFile parses the mount table at path (Self, Host).
func ReadFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse parses a mountinfo table; lines it cannot read are skipped.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super-options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 6 || len(g) < 2 {
			continue
		}
		maj, min, ok := strings.Cut(f[2], ":")
		if !ok {
			continue
		}
		id, err0 := strconv.Atoi(f[0])
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err0 != nil || err1 != nil || err2 != nil {
			continue
		}
		out = append(out, Entry{
			ID:         id,
			Dev:        unix.Mkdev(uint32(ma), uint32(mi)),
			Mountpoint: unescape(f[4]),
			Options:    f[5],
			FSType:     g[0],
			Source:     unescape(g[1]),
		})
	}
	return out, sc.Err()
}

// unescape undoes the kernel's octal escapes (\040 for a blank).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
