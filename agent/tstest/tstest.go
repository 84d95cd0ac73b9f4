// Package tstest is the test support shared by kmsagent's packages: the
// checks for what a test needs from the machine, the fixtures several
// packages build the same way (an embedded KMS with a key, the kmsagent
// binary, cryptsetup images, a loop-mounted ext4), acting as another
// user (RunAs, DialAs: what a server does with a client that is not
// root), and waiting.
//
// Prerequisites follow one rule. A test that cannot run here (not root, no
// /dev/fuse, a tool not installed) is skipped on a developer's machine,
// but fails when CI=true: CI installs everything (packaging/setup-dev.sh)
// and runs as root, so a skip there would hide a test that no longer
// runs. Every message says what is missing and how to get it.
//
// Tests wait for a signal, not for time to pass: a channel or pipe from
// the code under test, a process's exit (WaitExit), systemd's READY=1
// (NotifySocket), the kernel's change notification on the mount table
// (WaitMount), or testing/synctest for code that only uses timers. Poll
// and WaitFor are for what gives no signal at all, and say so where used.
//
// The helpers take testing.TB and call its Helper method, so failures are
// reported at the caller's line. LocalKMS and WaitMount make this package
// import kmsclient/local and agent/mountinfo: their tests, and those of
// the packages they import (kmsclient, agent/secret, agent/uuid), cannot
// use it, which would be an import cycle.
package tstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where a missing
// prerequisite is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable stops a test whose prerequisite is missing: it skips the
// test, or fails it under CI=true. The message says what is missing and
// how to provide it.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: a missing prerequisite fails the test instead of skipping it)", msg)
	}
	t.Skip(msg)
}

// NeedRoot stops the test unless it runs as root; why says what needs
// root ("to mount FUSE", "to chown the socket").
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root %s", why)
	}
}

// NeedFUSE stops the test unless it can mount FUSE file systems: root and
// /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	NeedRoot(t, "to mount FUSE")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Unavailable(t, "needs /dev/fuse (a kernel with FUSE): %v", err)
	}
}

// NeedTool returns the path of the program name, or stops the test when
// it is not installed; pkg is the Debian package that provides it.
func NeedTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not installed (apt-get install %s; packaging/setup-dev.sh installs every test tool)", name, pkg)
	}
	return p
}

// NeedFilesystem stops the test unless the kernel knows the file system
// type name (listed in /proc/filesystems).
func NeedFilesystem(t testing.TB, name string) {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		Unavailable(t, "cannot list the kernel's file systems: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return
		}
	}
	Unavailable(t, "no %s file system in this kernel", name)
}

// NeedCryptsetup returns the path of cryptsetup, or stops the test when
// it is not installed.
func NeedCryptsetup(t testing.TB) string {
	t.Helper()
	return NeedTool(t, "cryptsetup", "cryptsetup-bin")
}

// Cryptsetup runs cryptsetup (package cryptsetup-bin) in batch mode
// without locks, which need /run/cryptsetup, and returns its combined
// output. It stops the test when cryptsetup is not installed; a failing
// command is the caller's to judge.
func Cryptsetup(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cs := NeedCryptsetup(t)
	var out bytes.Buffer
	cmd := exec.Command(cs, append([]string{"--batch-mode", "--disable-locks"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// MustCryptsetup is Cryptsetup for commands that must succeed.
func MustCryptsetup(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Cryptsetup(t, args...)
	if err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// FastKDF returns the cryptsetup options of a keyslot that opens in
// milliseconds (PBKDF2 at 1000 iterations): for test images only.
func FastKDF() []string {
	return []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
}

// LuksFormat formats the image file path as LUKS2 with cryptsetup and a
// FastKDF keyslot 0 that opens with the passphrase in keyFile; extra
// options (--sector-size, --header, ...) come before the device.
func LuksFormat(t testing.TB, path, keyFile string, extra ...string) {
	t.Helper()
	args := append([]string{"luksFormat", "--type", "luks2", "--key-file", keyFile}, FastKDF()...)
	MustCryptsetup(t, append(append(args, extra...), path)...)
}

// LuksAddUnbound adds an unbound keyslot to the LUKS2 image path
// (luksAddKey --unbound: a 512-bit key of its own, not the volume key)
// that opens with the passphrase in keyFile. Without a passphrase file
// for the existing keyslots, cryptsetup needs none for an unbound one.
func LuksAddUnbound(t testing.TB, path, keyFile string) {
	t.Helper()
	MustCryptsetup(t, append([]string{"luksAddKey", "--unbound", "--key-size", "512", path, keyFile}, FastKDF()...)...)
}
