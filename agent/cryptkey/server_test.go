package cryptkey

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/audit"
	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/blockdev/token"
)

// TestServeKey is the crypttab path end to end without systemd: a
// client that binds and connects as systemd-cryptsetup does reads the
// passphrase, and stock cryptsetup opens the keyslot with it.
func TestServeKey(t *testing.T) {
	cryptsetup := tstest.NeedCryptsetup(t)
	v := newVolume(t)
	rec := &recorder{}
	path := serveTest(t, &Server{Lookup: mapLookup{"data": v.path}, Keyer: KMSKeyer{v.store}, Audit: rec})

	key, err := readKey(path, "@5a1b2c3d4e5f6071/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 44 || bytes.ContainsAny(key, "\n\x00") {
		t.Fatalf("got %d bytes, want the 44-byte base64 text of the data key without newline", len(key))
	}
	cmd := exec.Command(cryptsetup, "--batch-mode", "--disable-locks", "open", "--test-passphrase", "--key-file=-", v.path)
	cmd.Stdin = bytes.NewReader(key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup does not accept the served passphrase: %v\n%s", err, out)
	}
	// A byte off and cryptsetup refuses: the check above means something.
	key[0] ^= 1
	cmd = exec.Command(cryptsetup, "--batch-mode", "--disable-locks", "open", "--test-passphrase", "--key-file=-", v.path)
	cmd.Stdin = bytes.NewReader(key)
	if err := cmd.Run(); err == nil {
		t.Fatal("cryptsetup accepted a wrong passphrase")
	}

	recs := rec.records()
	if len(recs) != 1 {
		t.Fatalf("got %d audit records, want 1: %+v", len(recs), recs)
	}
	want := audit.Record{
		Caller: audit.Caller{UID: os.Geteuid(), PID: os.Getpid()},
		Volume: "data", Kind: audit.KindLUKS, CMK: v.keyID, Provider: "local",
		Op: audit.OpCrypttabKey, Result: audit.ResultOK,
	}
	got := recs[0]
	got.Comm, got.Unit = "", ""
	if got != want {
		t.Fatalf("audit record\n got %+v\nwant %+v", got, want)
	}
}

// TestServeRefuses checks that every refused request gets nothing (EOF
// at once, which systemd-cryptsetup takes as a wrong key and falls back
// to asking) and one audit record saying why.
func TestServeRefuses(t *testing.T) {
	v := newVolume(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		bind   string
		uid    int // -1: as this process
		setup  func(t *testing.T)
		result string
		msg    string
	}{
		{name: "unknown volume", bind: "@1/cryptsetup/other", uid: -1, result: "error", msg: "unknown volume"},
		{name: "no bind address", bind: "", uid: -1, result: "error", msg: "not systemd-cryptsetup's"},
		{name: "credential socket", bind: "@ab/unit/foo.service/cred", uid: -1, result: "error", msg: "not systemd-cryptsetup's"},
		{name: "bad volume name", bind: "@ab/cryptsetup/..", uid: -1, result: "error", msg: "not a valid file name"},
		{name: "not root", bind: "@ab/cryptsetup/data", uid: 65534, result: "error", msg: "not root"},
		{name: "not a LUKS volume", bind: "@ab/cryptsetup/plain", uid: -1, result: "error", msg: "not a LUKS2 volume"},
		{
			name: "disabled key", bind: "@ab/cryptsetup/data", uid: -1, result: "key_disabled", msg: "disabled",
			setup: func(t *testing.T) {
				if err := v.store.DisableKey(ctx, v.keyID); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { v.store.EnableKey(ctx, v.keyID) })
			},
		},
	}
	plain := filepath.Join(t.TempDir(), "plain.img")
	if err := os.WriteFile(plain, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.uid >= 0 {
				tstest.NeedRoot(t, "to connect as another user")
			}
			if tt.setup != nil {
				tt.setup(t)
			}
			rec := &recorder{}
			lookup := &countLookup{next: mapLookup{"data": v.path, "plain": plain}}
			path := serveTest(t, &Server{Lookup: lookup, Keyer: KMSKeyer{v.store}, Audit: rec})
			var (
				key []byte
				err error
			)
			if tt.uid >= 0 {
				// Let the other user reach the socket, so that the
				// server's own check is what refuses it.
				// t.TempDir makes its directories 0700.
				for p := filepath.Dir(path); p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
					if err := os.Chmod(p, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Chmod(path, 0o666); err != nil {
					t.Fatal(err)
				}
				err = tstest.RunAs(tstest.Creds{UID: tt.uid, GID: tt.uid}, func() error {
					var err error
					key, err = readKey(path, tt.bind)
					return err
				})
			} else {
				key, err = readKey(path, tt.bind)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(key) != 0 {
				t.Fatalf("refused request got %d bytes", len(key))
			}
			recs := rec.records()
			if len(recs) != 1 {
				t.Fatalf("got %d audit records, want 1: %+v", len(recs), recs)
			}
			r := recs[0]
			if r.Result != tt.result || !strings.Contains(r.Error, tt.msg) || r.Op != audit.OpCrypttabKey {
				t.Fatalf("audit record %+v, want result %q and an error containing %q", r, tt.result, tt.msg)
			}
			if tt.uid >= 0 && r.UID != tt.uid {
				t.Fatalf("audit record has uid %d, want the peer's %d", r.UID, tt.uid)
			}
			// A peer refused for who or what it is gets no look-up.
			if n := lookup.calls.Load(); (tt.uid >= 0 || strings.Contains(tt.msg, "systemd-cryptsetup") || strings.Contains(tt.msg, "file name")) && n != 0 {
				t.Fatalf("volume looked up %d times for a refused peer", n)
			}
			if tt.result == "key_disabled" && (r.CMK != v.keyID || r.Volume != "data") {
				t.Fatalf("audit record %+v lacks the volume or CMK", r)
			}
		})
	}
}

// TestServeAuditFailure checks that a key whose use cannot be recorded
// is not handed out.
func TestServeAuditFailure(t *testing.T) {
	v := newVolume(t)
	rec := &recorder{err: errors.New("disk full")}
	path := serveTest(t, &Server{Lookup: mapLookup{"data": v.path}, Keyer: KMSKeyer{v.store}, Audit: rec})
	key, err := readKey(path, "@ab/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 0 {
		t.Fatalf("got %d bytes although the audit record failed", len(key))
	}
}

// TestListen checks the socket's and directory's modes and that an
// unsafe directory, a live socket or a non-socket at the path is
// refused.
func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "cryptsetup.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600 | os.ModeSocket} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// A second server does not take over the socket of a live one.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	// A stale socket from a previous run is replaced.
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	// Traversable by others, as /run/kmsagent is once a share ran: fine.
	for _, mode := range []os.FileMode{0o711, 0o755} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		ln, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen in a directory of mode %v: %v", mode, err)
		}
		ln.Close()
	}
	for _, mode := range []os.FileMode{0o777, 0o770} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path); err == nil {
			t.Errorf("Listen in a directory of mode %v, writable by others, succeeded", mode)
		}
	}
}

// TestServeCrypttabLoop runs the default look-up for real: a crypttab
// line naming the volume by UUID=, resolved by scanning the block
// devices for the LUKS2 header, with the image on a loop device.
func TestServeCrypttabLoop(t *testing.T) {
	tstest.NeedRoot(t, "to attach a loop device")
	cryptsetup := tstest.NeedCryptsetup(t)
	losetup := tstest.NeedTool(t, "losetup", "mount")
	v := newVolume(t)
	out, err := exec.Command(losetup, "--find", "--show", "--read-only", v.path).CombinedOutput()
	if err != nil {
		tstest.Unavailable(t, "no loop device (losetup --find): %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "--detach", loop).Run() })

	dir := t.TempDir()
	tab := filepath.Join(dir, "crypttab")
	line := "data UUID=" + strings.ToUpper(v.uuid) + " /run/kmsagent/cryptsetup.sock luks,_netdev\n"
	if err := os.WriteFile(tab, []byte("# test\n"+line), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	path := serveTest(t, &Server{Lookup: &Crypttab{Path: tab}, Keyer: KMSKeyer{v.store}, Audit: rec})
	key, err := readKey(path, "@1234/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) == 0 {
		t.Fatalf("no key served; audit: %+v", rec.records())
	}
	cmd := exec.Command(cryptsetup, "--batch-mode", "--disable-locks", "open", "--test-passphrase", "--key-file=-", loop)
	cmd.Stdin = bytes.NewReader(key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup does not accept the served passphrase on %s: %v\n%s", loop, err, out)
	}
}

// blockingKeyer blocks every call until release is closed or the
// request's context ends, and tracks how many calls run at once.
type blockingKeyer struct {
	mu        sync.Mutex
	active    int
	maxActive int
	calls     int
	full      chan struct{} // closed when active first reaches limit
	limit     int
	release   chan struct{}
}

func (k *blockingKeyer) Passphrase(ctx context.Context, _ string) (*secret.Key, token.KMS, error) {
	k.mu.Lock()
	k.calls++
	k.active++
	k.maxActive = max(k.maxActive, k.active)
	if k.active == k.limit && k.full != nil {
		close(k.full)
		k.full = nil
	}
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.active--
		k.mu.Unlock()
	}()
	select {
	case <-k.release:
		return nil, token.KMS{}, errors.New("released")
	case <-ctx.Done():
		return nil, token.KMS{}, ctx.Err()
	}
}

// TestServeMaxConns checks that no more than MaxConns requests are
// worked on at once, and that the others are served once slots free.
func TestServeMaxConns(t *testing.T) {
	const limit, clients = 2, 6
	k := &blockingKeyer{full: make(chan struct{}), limit: limit, release: make(chan struct{})}
	full := k.full
	rec := &recorder{}
	path := serveTest(t, &Server{Lookup: mapLookup{"data": "/dev/null"}, Keyer: k, Audit: rec, MaxConns: limit})
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			// Abstract addresses are unique, as systemd's random part
			// makes them.
			_, err := readKey(path, fmt.Sprintf("@%x/cryptsetup/data", i))
			errs <- err
		}()
	}
	select {
	case <-full:
	case err := <-errs:
		t.Fatalf("a client ended before the limit was reached: %v", err)
	}
	close(k.release)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.maxActive > limit || k.calls != clients {
		t.Fatalf("%d calls, at most %d at once; want %d calls, at most %d at once", k.calls, k.maxActive, clients, limit)
	}
	if n := len(rec.records()); n != clients {
		t.Fatalf("%d audit records, want %d", n, clients)
	}
}

// TestServeTimeout checks that a request stuck at the KMS ends after
// Timeout with nothing written and a timeout recorded.
func TestServeTimeout(t *testing.T) {
	k := &blockingKeyer{release: make(chan struct{})}
	rec := &recorder{}
	path := serveTest(t, &Server{Lookup: mapLookup{"data": "/dev/null"}, Keyer: k, Audit: rec, Timeout: 50 * time.Millisecond})
	key, err := readKey(path, "@ab/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 0 {
		t.Fatalf("got %d bytes", len(key))
	}
	recs := rec.records()
	if len(recs) != 1 || recs[0].Result != "timeout" {
		t.Fatalf("audit records %+v, want one with result timeout", recs)
	}
}

func TestIsTransient(t *testing.T) {
	for err, want := range map[error]bool{
		&os.SyscallError{Syscall: "accept4", Err: syscall.EMFILE}: true,
		&os.SyscallError{Syscall: "accept4", Err: syscall.ENFILE}: true,
		&os.SyscallError{Syscall: "accept4", Err: syscall.EBADF}:  false,
		errors.New("closed"): false,
	} {
		if got := isTransient(err); got != want {
			t.Errorf("isTransient(%v) = %v, want %v", err, got, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// TestServeKeyNotLogged serves a key with the real audit log and a
// debug-level logger, then looks for the key in both: the passphrase
// text, and the data key it encodes in raw, hex and base64 form.
func TestServeKeyNotLogged(t *testing.T) {
	v := newVolume(t)
	logPath := filepath.Join(t.TempDir(), "audit.log")
	alog, err := audit.Open(logPath, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	var text syncBuffer
	logger := slog.New(slog.NewTextHandler(&text, &slog.HandlerOptions{Level: slog.LevelDebug}))
	path := serveTest(t, &Server{Lookup: mapLookup{"data": v.path}, Keyer: KMSKeyer{v.store}, Audit: alog, Log: logger})

	key, err := readKey(path, "@77/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 44 {
		t.Fatalf("got %d bytes", len(key))
	}
	// A refusal logs too.
	if _, err := readKey(path, "@78/cryptsetup/other"); err != nil {
		t.Fatal(err)
	}
	dk, err := base64.StdEncoding.DecodeString(string(key))
	if err != nil {
		t.Fatal(err)
	}
	auditText, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := audit.Read(bytes.NewReader(auditText))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 2 || res.Records[0].Result != audit.ResultOK || res.Records[0].Op != audit.OpCrypttabKey || res.Records[1].Volume != "other" {
		t.Fatalf("audit log holds %+v", res.Records)
	}
	forms := map[string][]byte{
		"passphrase":     key,
		"raw":            dk,
		"hex":            []byte(hex.EncodeToString(dk)),
		"base64 raw url": []byte(base64.RawURLEncoding.EncodeToString(dk)),
	}
	for where, b := range map[string][]byte{"audit log": auditText, "log": text.Bytes()} {
		if !bytes.Contains(b, []byte("data")) {
			t.Fatalf("%s names no volume: %s", where, b)
		}
		for form, k := range forms {
			if bytes.Contains(b, k) {
				t.Errorf("%s holds the key (%s)", where, form)
			}
		}
	}
}
