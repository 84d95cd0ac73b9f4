// Package audit keeps the log of every use of a volume key: one JSON line
// per unwrap, wrap, rewrap, key export or crypttab key request, saying
// who asked (uid, pid, command, systemd unit), for which volume, under
// which CMK and provider, and how it ended.
//
// # What a record holds, and what it cannot
//
// Record has only strings, integers and a time: no []byte, no
// *secret.Key, no error value, no interface. Key material has nowhere to
// go, and a test scans a log written around a real unwrap for the key in
// raw, hex and base64 form. The error message recorded is the text of
// the error, which for KMS failures is a *kmsclient.Error: those never
// carry key material by contract. The result is a stable string (ok,
// key_disabled, kms_unavailable, ...; see ErrorKind) for alerting rules;
// the message is for people.
//
// # Writing
//
// A record is encoded to one line and written with a single write(2) on
// a descriptor opened with O_APPEND, then fdatasync'ed before Write
// returns (fdatasync rather than fsync: it still makes the new size
// durable, which is all an append needs, and skips the mtime update).
// One write per record means concurrent writers never interleave inside
// a line. The Log serialises its own goroutines; writers in other
// processes (a CLI verb run next to the daemon) are kept out by an
// exclusive flock(2) on the log's directory, held for one record, under
// which the Log also notices a rotation another process made and appends
// to the new file, never to one rotated away.
//
// The cost is one disk flush per key use: BenchmarkWrite measured
// 0.25-0.4 ms per record on ext4 on a virtio disk with the host quiet,
// 1-2 ms with it busy (load 9 on 2 cores); a disk that honours cache
// flushes takes longer. Key uses are rare events (mounts, boots,
// rewraps), so nothing is batched.
//
// The kernel cuts a write to a regular file short only when the disk is
// full (or a file size limit is hit); the rest of the line is then
// offered again, which either completes it or returns the errno. A write
// cut short for good, or by a crash, leaves a line without its newline.
// The next record, from this process or the next one to open the file,
// starts with a newline, so the damage stays within that one line; Read
// reports such lines, and a torn last line, instead of failing.
//
// # Where the log lives
//
// Root appends to the log, so whoever can replace it or its directory
// could make root append to a file of their choosing (a symlink to
// /etc/shadow, say). The directory is opened without following symlinks
// and must be owned by root and writable by nobody else
// (safepath.OpenTrustedDir with 0o022); the log is opened relative to
// that descriptor with O_NOFOLLOW and must be a regular file. New logs
// are created 0600: the log names volumes, keys and callers.
//
// # Rotation
//
// Before a record would take the log past Options.MaxSize, the log is
// rotated as logrotate would: path.N-1 is renamed to path.N (dropping the
// oldest), ..., path to path.1, then a new path is created and the
// directory fsync'ed before the record is written to it. Each rename is
// atomic, so a crash between any two steps leaves every record in exactly
// one file; at worst one generation number is missing, which the next
// rotation closes up. ReadFiles reads path.N ... path.1, path in that
// order. Only the Log rotates: do not also rotate with logrotate.
//
// # Full disk: fail closed or fail open
//
// The caller writes the record after the KMS call (the result is known
// only then) and before the key is used or handed out. When the record
// cannot be written, the unwrap has already happened at the KMS; what
// remains to decide is whether the key may be used. Failing closed (the
// default: Write returns the error and the caller wipes the key and fails
// the request) guarantees that every key use the host acted on is in the
// log, at the price of availability: a full /var/log then stops volumes
// from unlocking, including at boot. Failing open (Options.FailOpen:
// Write returns nil, counts the record in Dropped and passes the error to
// Options.Report) keeps volumes unlocking and leaves a gap in the log
// that the counter and the report make visible. The KMS's own log (cloud
// providers keep one) still shows the unwrap either way. A record whose
// write succeeded but whose fdatasync failed may or may not survive a
// power loss; it is reported like a failed write.
package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"kmsagent/agent/errkind"
)

// Kind is the kind of volume a key belongs to.
type Kind string

const (
	KindShare Kind = "share" // a gocryptfs-format share served over FUSE
	KindLUKS  Kind = "luks"  // a LUKS2 block volume
)

// Operations recorded. The list is open: new verbs get new strings.
const (
	OpUnwrap      = "unwrap"       // KMS Decrypt of a volume key
	OpWrap        = "wrap"         // KMS Encrypt or GenerateDataKey (format, enroll)
	OpRewrap      = "rewrap"       // KMS ReEncrypt (CMK rotation, move to another CMK)
	OpExportKey   = "export-key"   // the key handed to root in plaintext (break-glass)
	OpCrypttabKey = "crypttab-key" // the key handed to systemd-cryptsetup over the key socket
)

// ResultOK is the Result of a key use that succeeded.
const ResultOK = errkind.OK

// timeFormat is RFC 3339 with nanoseconds always written, so lines have
// one width of time stamp and sort as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// maxMessage bounds the error message kept in a record.
const maxMessage = 1024

// Caller is who asked for the key use. For requests on the control
// socket these come from SO_PEERCRED; for the daemon's own work (boot
// unlock from the config) PID is the daemon's.
type Caller struct {
	UID  int    `json:"uid"`
	PID  int    `json:"pid"`
	Comm string `json:"comm,omitempty"` // the process name, /proc/PID/comm
	Unit string `json:"unit,omitempty"` // the systemd unit the process runs in
}

// LookupCaller completes uid and pid with the command name and systemd
// unit of pid, read from /proc: two small reads, cheap enough for every
// record. What cannot be read is left empty. The pid may have exited (or
// been reused) since the peer credentials were taken; the uid and pid
// are the trustworthy part, the rest is a hint.
func LookupCaller(uid, pid int) Caller {
	c := Caller{UID: uid, PID: pid}
	if pid <= 0 {
		return c
	}
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(proc, "comm")); err == nil {
		c.Comm = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(proc, "cgroup")); err == nil {
		c.Unit = unitFromCgroup(string(b))
	}
	return c
}

// unitFromCgroup picks the innermost systemd unit from /proc/PID/cgroup:
// on cgroup v2 "0::/system.slice/systemd-cryptsetup@data.service".
func unitFromCgroup(s string) string {
	for line := range strings.Lines(s) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 || (parts[0] != "0" && parts[1] != "name=systemd") {
			continue
		}
		elems := strings.Split(parts[2], "/")
		for i := len(elems) - 1; i >= 0; i-- {
			for _, suffix := range []string{".service", ".scope", ".socket", ".mount"} {
				if strings.HasSuffix(elems[i], suffix) {
					return elems[i]
				}
			}
		}
	}
	return ""
}

// Record is one key use. It has no field that can hold key material; see
// the package documentation.
type Record struct {
	Time time.Time `json:"time"` // set by Write when zero; written in UTC
	Caller
	Volume   string `json:"volume"`
	Kind     Kind   `json:"kind"`
	CMK      string `json:"cmk"`
	Provider string `json:"provider"`
	Op       string `json:"op"`
	Result   string `json:"result"`          // ResultOK or an ErrorKind
	Error    string `json:"error,omitempty"` // the error message, one line
}

// WithError sets Result and Error from the outcome of the key use.
func (r Record) WithError(err error) Record {
	r.Result = ErrorKind(err)
	r.Error = ""
	if err != nil {
		r.Error = oneLine(err.Error())
	}
	return r
}

// MarshalJSON writes Time in UTC with nanoseconds.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record // without this method
	return json.Marshal(struct {
		Time string `json:"time"` // shadows plain's Time
		plain
	}{r.Time.UTC().Format(timeFormat), plain(r)})
}

// ErrorKind maps the outcome of a key use to a stable string: ResultOK
// for nil, else its kind in errkind's vocabulary, which the daemon's
// status and metrics share. Alerting rules match these strings, so they
// never change once released.
func ErrorKind(err error) string { return errkind.Of(err) }

// oneLine keeps the first line of s, valid UTF-8, at most maxMessage
// bytes.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
