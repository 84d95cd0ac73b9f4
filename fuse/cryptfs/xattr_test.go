package cryptfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
	"kmsagent/fuse/nametransform"
)

// xattrNames lists the xattr names of p, not following a symlink.
func xattrNames(t testing.TB, p string) []string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var names []string
	for n := range bytes.SplitSeq(buf[:sz], []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	slices.Sort(names)
	return names
}

// getXattr reads a whole value of p, not following a symlink.
func getXattr(p, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(p, name, buf)
	return buf[:sz], err
}

// cipherXattrNames collects the stored xattr names of every entry of a
// cipher tree.
func cipherXattrNames(t testing.TB, cipher string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(cipher, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			names = append(names, xattrNames(t, p)...)
		}
		return nil
	})
	return names
}

// runAs runs a shell script as uid:gid with the supplementary groups
// given and $M set to dir.
func runAs(t testing.TB, uid, gid uint32, dir, script string, groups ...uint32) error {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	cmd.Env = []string{"M=" + dir, "PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("as %d: %s: %v: %s", uid, script, err, out)
	}
	return err
}

// openMount makes the mount point and its parents searchable by others.
func openMount(t testing.TB, m *testMount) {
	t.Helper()
	for _, p := range []string{m.mnt, m.mnt + "/..", m.mnt + "/../.."} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestXattrNamespaces sets, reads, lists and removes names of every
// namespace on a file, a directory and the root, and checks that only
// encrypted names reach the cipher directory.
func TestXattrNamespaces(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	if err := os.WriteFile(m.path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A v3 capability blob (cap_net_raw=ep), as setcap writes it.
	capValue := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	attrs := []struct {
		name  string
		value []byte
	}{
		{"user.plain", []byte("v")},
		{"user.empty", []byte{}},
		{"user.big", bytes.Repeat([]byte{0xa5}, 3000)},
		{"trusted.overlay.opaque", []byte("y")},
		{"security.test", []byte("label")},
		{"security.capability", capValue},
		{"system.other", []byte("s")},
	}
	for _, target := range []string{m.path("f"), m.path("d"), m.mnt} {
		for _, a := range attrs {
			if err := unix.Lsetxattr(target, a.name, a.value, 0); err != nil {
				t.Fatalf("setxattr %s %s: %v", target, a.name, err)
			}
		}
		var want []string
		for _, a := range attrs {
			want = append(want, a.name)
			got, err := getXattr(target, a.name)
			if err != nil || !bytes.Equal(got, a.value) {
				t.Errorf("%s %s = %q, %v; want %q", target, a.name, got, err, a.value)
			}
		}
		slices.Sort(want)
		if got := xattrNames(t, target); !slices.Equal(got, want) {
			t.Errorf("%s lists %q, want %q", target, got, want)
		}
	}
	stored := cipherXattrNames(t, cipher)
	for _, s := range stored {
		if !strings.HasPrefix(s, "user.gocryptfs.") {
			t.Errorf("stored name %q is not encrypted", s)
		}
	}
	if len(stored) < 3*len(attrs) {
		t.Errorf("%d stored names, want at least %d", len(stored), 3*len(attrs))
	}
	for _, a := range attrs {
		if err := unix.Lremovexattr(m.path("f"), a.name); err != nil {
			t.Errorf("removexattr %s: %v", a.name, err)
		}
		_, err := getXattr(m.path("f"), a.name)
		mustErrno(t, err, syscall.ENODATA)
	}
	if got := xattrNames(t, m.path("f")); len(got) != 0 {
		t.Errorf("after remove: %q", got)
	}
}

// TestXattrSizes: a too small buffer gets ERANGE from getxattr and
// listxattr, and a size query answers the exact size.
func TestXattrSizes(t *testing.T) {
	m, _ := newFS(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	names := []string{"user.a", "user.bb", "trusted.ccc"}
	for _, n := range names {
		if err := unix.Setxattr(p, n, []byte("12345"), 0); err != nil {
			t.Fatal(err)
		}
	}
	listLen := 0
	for _, n := range names {
		listLen += len(n) + 1
	}
	sz, err := unix.Listxattr(p, nil)
	if err != nil || sz != listLen {
		t.Fatalf("listxattr size %d, %v; want %d", sz, err, listLen)
	}
	_, err = unix.Listxattr(p, make([]byte, listLen-1))
	mustErrno(t, err, syscall.ERANGE)
	if sz, err := unix.Listxattr(p, make([]byte, listLen)); err != nil || sz != listLen {
		t.Fatalf("listxattr exact buffer: %d, %v", sz, err)
	}
	sz, err = unix.Getxattr(p, "user.a", nil)
	if err != nil || sz != 5 {
		t.Fatalf("getxattr size %d, %v; want 5", sz, err)
	}
	_, err = unix.Getxattr(p, "user.a", make([]byte, 4))
	mustErrno(t, err, syscall.ERANGE)
}

// TestXattrFlags: XATTR_CREATE and XATTR_REPLACE hold for every
// namespace.
func TestXattrFlags(t *testing.T) {
	m, _ := newFS(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"user.x", "trusted.x", "security.x"} {
		mustErrno(t, unix.Setxattr(p, name, []byte("1"), unix.XATTR_REPLACE), syscall.ENODATA)
		if err := unix.Setxattr(p, name, []byte("1"), unix.XATTR_CREATE); err != nil {
			t.Fatalf("%s create: %v", name, err)
		}
		mustErrno(t, unix.Setxattr(p, name, []byte("2"), unix.XATTR_CREATE), syscall.EEXIST)
		if err := unix.Setxattr(p, name, []byte("3"), unix.XATTR_REPLACE); err != nil {
			t.Fatalf("%s replace: %v", name, err)
		}
		if v, err := getXattr(p, name); err != nil || string(v) != "3" {
			t.Fatalf("%s = %q, %v", name, v, err)
		}
	}
}

// TestXattrSymlink: a symlink carries no user xattrs (the kernel refuses
// them), and the encrypted form of other namespaces, which is a user
// xattr in the cipher directory, is refused the same way rather than
// landing on the symlink's target.
func TestXattrSymlink(t *testing.T) {
	m, _ := newFS(t)
	if err := os.WriteFile(m.path("target"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", m.path("l")); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, unix.Lsetxattr(m.path("l"), "user.x", []byte("1"), 0), syscall.EPERM)
	mustErrno(t, unix.Lsetxattr(m.path("l"), "trusted.x", []byte("1"), 0), syscall.EPERM)
	if got := xattrNames(t, m.path("l")); len(got) != 0 {
		t.Errorf("symlink lists %q", got)
	}
	if got := xattrNames(t, m.path("target")); len(got) != 0 {
		t.Errorf("target got %q through the symlink", got)
	}
	// Through the symlink, the target's xattrs.
	if err := unix.Setxattr(m.path("l"), "user.y", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if got := xattrNames(t, m.path("target")); !slices.Equal(got, []string{"user.y"}) {
		t.Errorf("target lists %q", got)
	}
}

// TestXattrLongName: names whose encrypted form exceeds the kernel's
// 255 bytes are refused with ERANGE, like names over 255 bytes.
func TestXattrLongName(t *testing.T) {
	m, _ := newFS(t)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int // name length, "user." included
		want syscall.Errno
	}{
		{175, 0}, // pads to 176 bytes: 250 stored
		{176, syscall.ERANGE},
		{255, syscall.ERANGE},
		{256, syscall.ERANGE}, // the kernel's own limit
	} {
		name := "user." + strings.Repeat("n", tc.n-len("user."))
		err := unix.Setxattr(p, name, []byte("v"), 0)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%d-byte name: %v", tc.n, err)
				continue
			}
			if v, err := getXattr(p, name); err != nil || string(v) != "v" {
				t.Errorf("%d-byte name reads %q, %v", tc.n, v, err)
			}
			continue
		}
		mustErrno(t, err, tc.want)
	}
}

// TestXattrCapability: setcap and getcap round-trip on a default
// (nosuid) mount, and a write drops the capability, as on a local file
// system, also when the absence of one was already known and across a
// remount.
func TestXattrCapability(t *testing.T) {
	tstest.NeedFUSE(t)
	setcap := tstest.NeedTool(t, "setcap", "libcap2-bin")
	getcap := tstest.NeedTool(t, "getcap", "libcap2-bin")
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	p := m.path("prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The write above made the kernel ask, so the absence is known now.
	_, err := getXattr(p, "security.capability")
	mustErrno(t, err, syscall.ENODATA)
	for round := 0; round < 2; round++ {
		if out, err := exec.Command(setcap, "cap_net_raw=ep", p).CombinedOutput(); err != nil {
			t.Fatalf("setcap: %v: %s", err, out)
		}
		out, err := exec.Command(getcap, p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "cap_net_raw=ep") {
			t.Fatalf("round %d: getcap: %v: %q", round, err, out)
		}
		if got := xattrNames(t, p); !slices.Equal(got, []string{"security.capability"}) {
			t.Errorf("round %d: lists %q", round, got)
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("exit 0\n")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, err = getXattr(p, "security.capability")
		mustErrno(t, err, syscall.ENODATA)
	}
	if out, err := exec.Command(setcap, "cap_net_raw=ep", p).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v: %s", err, out)
	}
	m.unmount(t)
	m = mountFS(t, cipher, k, Options{}, MountOptions{})
	if out, err := exec.Command(getcap, m.path("prog")).CombinedOutput(); err != nil || !strings.Contains(string(out), "cap_net_raw=ep") {
		t.Fatalf("after remount: getcap: %v: %q", err, out)
	}
}

// TestXattrSELinuxLabel: on a host without SELinux a file without a label
// says labels are not supported, which makes ls -l stop asking for the
// label of every file, while a stored label still reads, lists and is
// removed like any other name; ACLs are unaffected.
func TestXattrSELinuxLabel(t *testing.T) {
	tstest.NeedFUSE(t)
	if !labelsUnsupported() {
		t.Skip("SELinux is enabled on this host; it answers for labels itself")
	}
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(m.path(name), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	_, err := getXattr(m.path("a"), xattrSELinux)
	mustErrno(t, err, syscall.EOPNOTSUPP)
	label := []byte("system_u:object_r:user_home_t:s0\x00")
	if err := unix.Lsetxattr(m.path("b"), xattrSELinux, label, 0); err != nil {
		t.Fatalf("set label: %v", err)
	}
	if got, err := getXattr(m.path("b"), xattrSELinux); err != nil || !bytes.Equal(got, label) {
		t.Fatalf("label = %q, %v", got, err)
	}
	if got := xattrNames(t, m.path("b")); !slices.Equal(got, []string{xattrSELinux}) {
		t.Fatalf("lists %q", got)
	}
	if err := unix.Lremovexattr(m.path("b"), xattrSELinux); err != nil {
		t.Fatal(err)
	}
	_, err = getXattr(m.path("b"), xattrSELinux)
	mustErrno(t, err, syscall.EOPNOTSUPP)
	// ACLs still answer as before: absent, then set and enforced.
	_, err = getXattr(m.path("a"), xattrACLAccess)
	mustErrno(t, err, syscall.ENODATA)
	// ls -l asks once and stops; its listing is complete.
	if out, err := exec.Command("ls", "-l", m.mnt).CombinedOutput(); err != nil || !strings.Contains(string(out), " a\n") || !strings.Contains(string(out), " b\n") {
		t.Fatalf("ls -l: %v: %s", err, out)
	}
}

// TestXattrTrustedHidden: trusted.* names are listed for root only, as a
// local file system lists them; others could not read them anyway.
func TestXattrTrustedHidden(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	m := mountFS(t, newCipherDir(t), k, Options{}, MountOptions{AllowOther: true})
	openMount(t, m)
	p := m.path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"user.u", "trusted.t"} {
		if err := unix.Setxattr(p, n, []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := xattrNames(t, p); !slices.Equal(got, []string{"trusted.t", "user.u"}) {
		t.Errorf("root lists %q", got)
	}
	getfattr := tstest.NeedTool(t, "getfattr", "attr")
	// getfattr -d reads every listed name of the match and fails on one
	// it cannot read.
	if err := runAs(t, 4242, 4242, m.mnt, getfattr+` -d -m - "$M/f" | grep -q user.u && ! `+getfattr+` -d -m - "$M/f" | grep -q trusted`); err != nil {
		t.Error("other user: trusted.* listed or user.* not")
	}
}

// TestXattrHiddenStored: stored names that are not ours (a label of the
// cipher file's own file system), that do not decrypt, or that decrypt to
// an ACL name (gocryptfs 1.8 encrypted ACLs) are not listed.
func TestXattrHiddenStored(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	if err := os.WriteFile(m.path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.path("f"), "user.kept", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	files := cipherFiles(t, cipher)
	if len(files) != 1 {
		t.Fatalf("cipher files %q", files)
	}
	nt := nametransform.New(k.core.NameBlock())
	oldACL, err := nt.EncryptXattrName(xattrACLAccess)
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string][]byte{
		"user.foreign":                          []byte("1"),
		"user.gocryptfs.notavalidname":          []byte("1"),
		oldACL:                                  []byte("1"),
		"trusted.foreign":                       []byte("1"),
		"user.gocryptfs.AAAAAAAAAAAAAAAAAAAAAA": []byte("1"),
	} {
		if err := unix.Lsetxattr(files[0], name, value, 0); err != nil {
			t.Fatalf("setxattr %s on the cipher file: %v", name, err)
		}
	}
	if got := xattrNames(t, m.path("f")); !slices.Equal(got, []string{"user.kept"}) {
		t.Errorf("lists %q, want only user.kept", got)
	}
	if !strings.Contains(m.logs.String(), "xattr name does not decrypt") {
		t.Errorf("undecryptable name not logged:\n%s", m.logs.String())
	}
}

// TestCapCache: an absence read before a concurrent set of the name is
// not recorded once the set has finished.
func TestCapCache(t *testing.T) {
	var c capCache
	if absent, _ := c.absent(); absent {
		t.Fatal("absent before any read")
	}
	_, seen := c.absent()
	c.markAbsent(seen)
	if absent, _ := c.absent(); !absent {
		t.Fatal("absence not recorded")
	}
	c.changed()
	if absent, _ := c.absent(); absent {
		t.Fatal("absence kept after a change")
	}
	// A read starts, a set completes, the read finds nothing (it read
	// before the write) and tries to record that.
	_, seen = c.absent()
	c.changed()
	c.markAbsent(seen)
	if absent, _ := c.absent(); absent {
		t.Fatal("stale absence recorded")
	}
}
