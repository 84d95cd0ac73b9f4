package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/audit"
	"kmsagent/agent/tstest"
)

// TestRunDaemonCrypttabKey: kmsagent run serves the keys of crypttab
// volumes on its key socket as systemd-cryptsetup reads them: root with
// systemd-cryptsetup's peer address gets the keyslot passphrase, which
// stock cryptsetup accepts; a non-root peer, an unknown volume, a peer
// address that names no volume and a volume whose key is disabled get
// nothing. Every request is audited, and the daemon's memory never holds
// the key: a worker per request writes it.
func TestRunDaemonCrypttabKey(t *testing.T) {
	for _, confined := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "confined"}[confined], func(t *testing.T) {
			testCrypttabKey(t, confined)
		})
	}
}

// testCrypttabKey is TestRunDaemonCrypttabKey with the daemon run
// directly, or confined as under systemd: its key workers then start
// through the worker socket, the client's connection and the go-ahead
// pipe passed with the request.
func testCrypttabKey(t *testing.T, confined bool) {
	cryptsetup := tstest.NeedCryptsetup(t)
	h := newDaemonHost(t)
	h.cli("kms", "create-key", "--alias", "disks")
	h.cli("kms", "create-key", "--alias", "off")
	imgs := map[string]string{}
	crypttab := ""
	for _, v := range []struct{ name, key string }{{"data", "disks"}, {"off", "off"}} {
		img := filepath.Join(h.dir, v.name+".img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 17<<20); err != nil {
			t.Fatal(err)
		}
		h.cli("format", "luks", img, "--key-id", v.key)
		imgs[v.name] = img
		crypttab += fmt.Sprintf("%s %s %s luks,_netdev\n", v.name, img, h.keySock)
	}
	h.cli("kms", "disable-key", "off")
	writeFile(t, h.crypttab, crypttab, 0o644)

	cmd, notify := startConfinable(t, h, confined)
	notify.await(t, "READY=1")

	// The key of data, as systemd-cryptsetup would read it.
	key, err := readCrypttabKey(h.keySock, "@5a1b2c3d4e5f6071/cryptsetup/data")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 44 {
		t.Fatalf("got %d bytes for data, want the 44-byte passphrase", len(key))
	}
	open := func(key []byte) error {
		c := exec.Command(cryptsetup, "--batch-mode", "--disable-locks", "open", "--test-passphrase", "--key-file=-", imgs["data"])
		c.Stdin = bytes.NewReader(key)
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := open(key); err != nil {
		t.Fatalf("cryptsetup does not open the keyslot with the served key: %v", err)
	}
	if err := open(append([]byte{key[0] ^ 1}, key[1:]...)); err == nil {
		t.Fatal("cryptsetup opened the keyslot with a wrong key: the check above means nothing")
	}

	// Let others reach the socket, so that the daemon's own check is
	// what refuses them.
	for p := filepath.Dir(h.keySock); p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(h.keySock, 0o666); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, bind string
		uid        int // -1: root
		result     string
	}{
		{"not root", "@ab/cryptsetup/data", 65534, "error"},
		{"unknown volume", "@ab/cryptsetup/nope", -1, "error"},
		{"no volume in the address", "@ab/unit/x.service/cred", -1, "error"},
		{"key disabled", "@ab/cryptsetup/off", -1, "key_disabled"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			var err error
			if tt.uid >= 0 {
				err = tstest.RunAs(tstest.Creds{UID: tt.uid, GID: tt.uid}, func() error {
					got, err = readCrypttabKey(h.keySock, tt.bind)
					return err
				})
			} else {
				got, err = readCrypttabKey(h.keySock, tt.bind)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 0 {
				t.Fatalf("got %d bytes, want none", len(got))
			}
		})
	}

	// One record per request, in order.
	res, err := audit.ReadFiles(filepath.Join(h.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for _, r := range res.Records {
		if r.Op == audit.OpCrypttabKey {
			recs = append(recs, r)
		}
	}
	if len(recs) != 1+len(refused) {
		t.Fatalf("%d crypttab-key records, want %d: %+v", len(recs), 1+len(refused), recs)
	}
	if r := recs[0]; r.Volume != "data" || r.Result != audit.ResultOK || r.CMK == "" || r.UID != 0 {
		t.Errorf("delivery record %+v", r)
	}
	for i, tt := range refused {
		if r := recs[i+1]; r.Result != tt.result || r.Error == "" {
			t.Errorf("%s: record %+v, want result %s with the error", tt.name, r, tt.result)
		}
	}
	if r := recs[len(recs)-1]; r.Volume != "off" || r.CMK == "" {
		t.Errorf("disabled key's record %+v names no volume or CMK", r)
	}

	// The passphrase is the base64 text of the data key.
	dek, err := base64.StdEncoding.DecodeString(string(key))
	if err != nil {
		t.Fatal(err)
	}
	forms := keyForms(dek, "data key")
	forms["passphrase"] = key
	mem := readProcessMemory(t, cmd.Process.Pid)
	for name, form := range forms {
		if at := mem.find(form); at != "" {
			t.Errorf("the daemon holds the %s, in %s", name, at)
		}
	}
}

// readCrypttabKey reads a key from the socket at path as
// systemd-cryptsetup does: bound to the abstract address bind (none when
// empty), its writing side shut, read to EOF.
func readCrypttabKey(path, bind string) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	if bind != "" {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: bind}); err != nil {
			return nil, err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, err
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		return nil, err
	}
	return b, nil
}
