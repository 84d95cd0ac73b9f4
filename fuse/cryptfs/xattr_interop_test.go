package cryptfs

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// Interop of xattrs and ACLs with Debian's gocryptfs 2.3 (mounted with
// -acl, as ACLs need, and -suid, without which it does not read file
// capabilities).

// interopXattrs are set on "f" and "d" of a mount.
var interopXattrs = []struct{ name, value string }{
	{"user.comment", "written by one, read by the other"},
	{"user.empty", ""},
	{"trusted.overlay.opaque", "y"},
	{"security.test", "label"},
	{"security.capability", "\x00\x00\x00\x02\x00\x20\x00\x00\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
}

// writeXattrs makes f and d under mnt with every name of interopXattrs
// and ACLs, and returns getfacl's view of them.
func writeXattrs(t *testing.T, mnt string) string {
	t.Helper()
	setfacl := tstest.NeedTool(t, "setfacl", "acl")
	if err := os.WriteFile(mnt+"/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt+"/d", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt + "/f", mnt + "/d"} {
		for _, x := range interopXattrs {
			if err := unix.Lsetxattr(p, x.name, []byte(x.value), 0); err != nil {
				t.Fatalf("setxattr %s %s: %v", p, x.name, err)
			}
		}
	}
	for _, args := range [][]string{
		{"-m", "u:4242:rw,g:4343:r", mnt + "/f"},
		{"-m", "u:4242:rwx", "-d", "-m", "u:4242:rx", mnt + "/d"},
	} {
		if out, err := exec.Command(setfacl, args...).CombinedOutput(); err != nil {
			t.Fatalf("setfacl %q: %v: %s", args, err, out)
		}
	}
	return getfacl(t, mnt)
}

func getfacl(t *testing.T, mnt string) string {
	t.Helper()
	cmd := exec.Command(tstest.NeedTool(t, "getfacl", "acl"), "-n", "f", "d")
	cmd.Dir = mnt
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("getfacl: %v: %s", err, out)
	}
	return string(out)
}

// checkXattrs reads back what writeXattrs wrote.
func checkXattrs(t *testing.T, mnt, acls string) {
	t.Helper()
	for _, p := range []string{mnt + "/f", mnt + "/d"} {
		for _, x := range interopXattrs {
			v, err := getXattr(p, x.name)
			if err != nil || !bytes.Equal(v, []byte(x.value)) {
				t.Errorf("%s %s = %q, %v; want %q", p, x.name, v, err, x.value)
			}
		}
		if got, want := len(xattrNames(t, p)), len(interopXattrs)+1; got < want {
			t.Errorf("%s lists %q, want at least %d names", p, xattrNames(t, p), want)
		}
	}
	if got := getfacl(t, mnt); got != acls {
		t.Errorf("ACLs read back as\n%s\nwant\n%s", got, acls)
	}
}

func TestInteropXattrsOursToGocryptfs(t *testing.T) {
	tstest.NeedFUSE(t)
	tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	acls := writeXattrs(t, m.mnt)
	m.unmount(t)
	gmnt := gocryptfsMount(t, cipher, k.hex+"\n", "-masterkey=stdin", "-acl", "-suid")
	checkXattrs(t, gmnt, acls)
}

func TestInteropXattrsGocryptfsToOurs(t *testing.T) {
	tstest.NeedFUSE(t)
	tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	k := newTestKey(t)
	cipher := newCipherDir(t)
	gmnt := gocryptfsMount(t, cipher, k.hex+"\n", "-masterkey=stdin", "-acl", "-suid")
	acls := writeXattrs(t, gmnt)
	gocryptfsUnmount(t, gmnt)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	checkXattrs(t, m.mnt, acls)
}
