package share

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
)

// Worker is what the process serving a mount publishes about itself,
// next to its lock. kmsagent status and umount run as any user, and the
// lock cannot tell them whether its holder lives: it is root's only, as
// anyone who could open it could also flock it and block the next mount.
// The record is readable by all and names the process, which anyone can
// check for.
type Worker struct {
	PID int `json:"pid"`
	// Start is the process's start time (/proc/PID/stat), which tells
	// the worker from a later process that got its PID.
	Start      uint64 `json:"start"`
	CipherDir  string `json:"cipher_dir"`
	Mountpoint string `json:"mountpoint"`
	MountID    int    `json:"mount_id"`
	Dev        uint64 `json:"dev"` // of the mounted file system
}

// maxRecord bounds a record file; one is about 200 bytes.
const maxRecord = 16 << 10

// recordPath names the record next to the lock at lockPath.
func recordPath(lockPath string) string {
	return strings.TrimSuffix(lockPath, ".lock") + ".worker"
}

// Publish writes the record of the lock's holder, atomically.
func (l *Lock) Publish(w Worker) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	path := recordPath(l.path)
	if err := safepath.ReplaceFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("worker record: %w", err)
	}
	return nil
}

// parseWorker decodes a record.
func parseWorker(b []byte) (Worker, error) {
	var w Worker
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Worker{}, err
	}
	if w.PID <= 0 || w.MountID <= 0 || !filepath.IsAbs(w.Mountpoint) || !filepath.IsAbs(w.CipherDir) {
		return Worker{}, errors.New("incomplete worker record")
	}
	return w, nil
}

// Workers reads the records in runDir. Unreadable or malformed records
// are skipped: they are left by a worker that died while writing one.
func Workers(runDir string) ([]Worker, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Worker
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".worker") || !e.Type().IsRegular() {
			continue
		}
		f, err := os.OpenFile(filepath.Join(runDir, e.Name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(f, maxRecord))
		f.Close()
		if err != nil {
			continue
		}
		if w, err := parseWorker(b); err == nil {
			out = append(out, w)
		}
	}
	return out, nil
}

// removeRecord removes w's record if it is still w's (a new worker of the
// same share may have replaced it).
func removeRecord(runDir string, w Worker) {
	path, err := LockPath(runDir, w.CipherDir)
	if err != nil {
		return
	}
	path = recordPath(path)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if cur, err := parseWorker(b); err == nil && cur == w {
		os.Remove(path)
	}
}

// Liveness is whether a worker's process is there.
type Liveness int

const (
	Gone    Liveness = iota
	Alive            // the process with the recorded PID and start time
	Unknown          // a process has the PID, but /proc hides it (hidepid)
)

// Liveness looks for w's process.
func (w Worker) Liveness() Liveness {
	start, err := processStart(w.PID)
	if err == nil {
		if start == w.Start {
			return Alive
		}
		return Gone
	}
	if err := unix.Kill(w.PID, 0); errors.Is(err, unix.ESRCH) {
		return Gone
	}
	return Unknown
}

// processStart reads the start time of process pid, in clock ticks after
// boot; 0 for a process that has exited.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold blanks
	// and parentheses itself; the fields after it are numbers.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3, the state; starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if f[0] == "Z" || f[0] == "X" {
		// Exited, not yet reaped: its descriptors, the FUSE
		// connection among them, are closed.
		return 0, nil
	}
	return strconv.ParseUint(f[19], 10, 64)
}
