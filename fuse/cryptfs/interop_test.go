package cryptfs

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
)

// Interop with Debian's gocryptfs 2.3: a tree written through our mount
// reads back identically through gocryptfs -masterkey, and the reverse.

// gocryptfsMount runs gocryptfs in the foreground on cipher, mounted on a
// new directory, until the test ends. args select how it gets its key.
func gocryptfsMount(t *testing.T, cipher string, stdin string, args ...string) string {
	t.Helper()
	bin := tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	mnt := filepath.Join(t.TempDir(), "gmnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// gocryptfs sends SIGUSR1 to -notifypid once it has mounted (its own
	// daemonisation uses this): wait for that, not for mountinfo to change.
	mounted := make(chan os.Signal, 1)
	signal.Notify(mounted, syscall.SIGUSR1)
	defer signal.Stop(mounted)
	notify := fmt.Sprintf("-notifypid=%d", os.Getpid())
	cmd := exec.Command(bin, append(append([]string{"-fg", "-nosyslog", notify}, args...), cipher, mnt)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out tstest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if tstest.Mounted(t, mnt) {
			if o, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Logf("fusermount3 -u %s: %v: %s", mnt, err, o)
				_ = unix.Unmount(mnt, unix.MNT_DETACH)
			}
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	timeout := time.After(15 * time.Second)
	for {
		select {
		case <-mounted:
			// The signal names no mount: another mount of this process
			// may have sent it.
			if tstest.Mounted(t, mnt) {
				return mnt
			}
		case err := <-exited:
			t.Fatalf("gocryptfs exited: %v\n%s", err, out.String())
		case <-timeout:
			t.Fatalf("gocryptfs did not mount within 15s:\n%s", out.String())
		}
	}
}

func gocryptfsUnmount(t *testing.T, mnt string) {
	t.Helper()
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u %s: %v: %s", mnt, err, out)
	}
}

func TestInteropOursToGocryptfs(t *testing.T) {
	tstest.NeedFUSE(t)
	tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	want := writeTree(t, m.mnt)
	checkTree(t, m.mnt, want)
	m.unmount(t)
	if t.Failed() {
		t.FailNow()
	}
	// A file that is not an encrypted name must not disturb gocryptfs.
	if err := os.WriteFile(filepath.Join(cipher, "kmsagent.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	gmnt := gocryptfsMount(t, cipher, k.hex+"\n", "-masterkey=stdin")
	checkTree(t, gmnt, want)
}

func TestInteropGocryptfsToOurs(t *testing.T) {
	tstest.NeedFUSE(t)
	bin := tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	xray := tstest.NeedTool(t, "gocryptfs-xray", "gocryptfs")
	cipher := filepath.Join(t.TempDir(), "cipher")
	if err := os.Mkdir(cipher, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-init", "-q", "-extpass", "echo pw", "-scryptn", "10", cipher).CombinedOutput(); err != nil {
		t.Fatalf("gocryptfs -init: %v: %s", err, out)
	}
	// The master key, as gocryptfs-xray prints it (hex, possibly with
	// dashes).
	dump := exec.Command(xray, "-dumpmasterkey", filepath.Join(cipher, "gocryptfs.conf"))
	dump.Stdin = strings.NewReader("pw\n")
	var stdout bytes.Buffer
	dump.Stdout = &stdout
	if err := dump.Run(); err != nil {
		t.Fatalf("gocryptfs-xray -dumpmasterkey: %v", err)
	}
	hexKey := strings.ReplaceAll(strings.TrimSpace(stdout.String()), "-", "")
	raw := make([]byte, 32)
	if n, err := hexDecode(raw, hexKey); err != nil || n != 32 {
		t.Fatalf("master key from gocryptfs-xray: %d bytes, %v", n, err)
	}
	sk, err := secret.FromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	k := keyFrom(t, sk)

	gmnt := gocryptfsMount(t, cipher, "", "-extpass", "echo pw")
	want := writeTree(t, gmnt)
	gocryptfsUnmount(t, gmnt)

	if err := CheckKey(cipher, k.core); err != nil {
		t.Fatalf("CheckKey with the right key: %v", err)
	}
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	checkTree(t, m.mnt, want)
	// Append through ours and read back through gocryptfs again.
	f, err := os.OpenFile(m.path("size-4097"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("appended")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e := want["size-4097"]
	e.data = append(append([]byte(nil), e.data...), "appended"...)
	want["size-4097"] = e
	m.unmount(t)
	gmnt2 := gocryptfsMount(t, cipher, "", "-extpass", "echo pw")
	checkTree(t, gmnt2, want)
}

func hexDecode(dst []byte, s string) (int, error) {
	if len(s) != 2*len(dst) {
		return 0, hex.ErrLength
	}
	return hex.Decode(dst, []byte(s))
}
