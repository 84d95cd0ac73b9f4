package cryptfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"kmsagent/agent/tstest"
)

// aclScript sets access and default ACLs, creates entries under a default
// ACL, changes modes of entries with ACLs, and prints every ACL. Run on a
// local file system and on a mount, the outputs must agree.
const aclScript = `set -e
cd "$D"
umask 027
touch p1
mkdir p2
mkfifo p3
stat -c '%n %a' p1 p2 p3
umask 000
mkdir d
setfacl -m u:4242:rwx,g:4343:r-x d
setfacl -d -m u:4242:rwx,g:4343:rx,o::- d
touch d/f
echo x > d/f2
chmod 640 d/f2
mkdir d/sub
mkdir -m 0750 d/sub2
mkdir -m 0500 d/sub3
touch g
setfacl -m u:4242:r g
chmod 600 g
touch h
setfacl -m u:4242:rw h
setfacl -b h
getfacl -n -p d d/f d/f2 d/sub d/sub2 d/sub3 g h
`

// TestACLLikeLocal runs aclScript on the test's local file system and on a
// mount: ACL inheritance, mode/mask updates and removal must come out the
// same.
func TestACLLikeLocal(t *testing.T) {
	tstest.NeedFUSE(t)
	tstest.NeedTool(t, "setfacl", "acl")
	run := func(dir string) string {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", aclScript)
		cmd.Env = append(os.Environ(), "D="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in %s: %v\n%s", dir, err, out)
		}
		return string(out)
	}
	local := t.TempDir()
	if err := setfaclWorks(local); err != nil {
		t.Skipf("local file system has no ACLs: %v", err)
	}
	want := run(local)
	for _, mo := range []MountOptions{{}, {AllowOther: true}} {
		m := mountFS(t, newCipherDir(t), newTestKey(t), Options{}, mo)
		if got := run(m.mnt); got != want {
			t.Errorf("allow_other=%v: mount gives\n%s\nlocal gives\n%s", mo.AllowOther, got, want)
		}
		// The ACLs are stored as they are, for the kernel of the cipher
		// side to apply (inheritance) and gocryptfs to read.
		stored := cipherXattrNames(t, m.cipher)
		if !slices.Contains(stored, "system.posix_acl_access") || !slices.Contains(stored, "system.posix_acl_default") {
			t.Errorf("stored names %q lack the ACLs", stored)
		}
		m.unmount(t)
	}
}

// setfaclWorks checks that dir's file system takes ACLs.
func setfaclWorks(dir string) error {
	p := filepath.Join(dir, ".acltest")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(p)
	if out, err := exec.Command("setfacl", "-m", "u:4242:r", p).CombinedOutput(); err != nil {
		return &exec.ExitError{Stderr: out}
	}
	return nil
}

// TestACLEnforced: with allow_other the kernel applies ACLs to other
// users, beyond what the modes say, and a default ACL grants access to
// new entries.
func TestACLEnforced(t *testing.T) {
	tstest.NeedFUSE(t)
	setfacl := tstest.NeedTool(t, "setfacl", "acl")
	m := mountFS(t, newCipherDir(t), newTestKey(t), Options{}, MountOptions{AllowOther: true})
	openMount(t, m)
	must := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(setfacl, args...).CombinedOutput(); err != nil {
			t.Fatalf("setfacl %q: %v: %s", args, err, out)
		}
	}
	// Mode 0644: everyone may read; the ACL denies 4242 and lets 4343
	// write.
	if err := os.WriteFile(m.path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	must("-m", "u:4242:---,u:4343:rw", m.path("f"))
	if runAs(t, 4242, 4242, m.mnt, `cat "$M/f"`) == nil {
		t.Error("4242 read a file its ACL entry denies")
	}
	if err := runAs(t, 4343, 4343, m.mnt, `echo y >> "$M/f"`); err != nil {
		t.Error("4343 cannot write a file its ACL entry allows")
	}
	if err := runAs(t, 4444, 4444, m.mnt, `cat "$M/f"`); err != nil {
		t.Error("others lost read access")
	}
	if runAs(t, 4343, 4343, m.mnt, setfacl+` -m u:4343:rwx "$M/f"`) == nil {
		t.Error("a user other than the owner changed the ACL")
	}
	// A root-owned 0755 directory whose default ACL lets 4242 in: the new
	// subdirectory inherits it.
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	must("-m", "u:4242:rwx", "-d", "-m", "u:4242:rwx", m.path("d"))
	// Mode 0777 keeps the inherited mask at rwx: the mode limits the ACL.
	if err := os.Mkdir(m.path("d", "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := runAs(t, 4242, 4242, m.mnt, `echo mine > "$M/d/sub/new"`); err != nil {
		t.Error("default ACL not inherited: 4242 cannot create in d/sub")
	}
	if runAs(t, 4343, 4343, m.mnt, `echo mine > "$M/d/sub/new2"`) == nil {
		t.Error("4343 created a file in a directory it has no write access to")
	}
	// Removing the ACL takes the access away again.
	must("-b", m.path("d", "sub"))
	if runAs(t, 4242, 4242, m.mnt, `echo again > "$M/d/sub/new3"`) == nil {
		t.Error("access stayed after setfacl -b")
	}
}

// TestACLClearsSetGID: setting an access ACL clears the set-group-ID bit
// when the caller is neither in the file's group nor privileged, as on a
// local file system (xfstests generic/375), although the server runs as
// root.
func TestACLClearsSetGID(t *testing.T) {
	tstest.NeedFUSE(t)
	setfacl := tstest.NeedTool(t, "setfacl", "acl")
	m := mountFS(t, newCipherDir(t), newTestKey(t), Options{}, MountOptions{AllowOther: true})
	openMount(t, m)
	for _, tc := range []struct {
		name   string
		groups []uint32
		want   os.FileMode
	}{
		{"not in group", nil, 0o755},
		{"in group", []uint32{4343}, os.ModeSetgid | 0o755},
	} {
		p := m.path("f")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 4242, 4343); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.ModeSetgid|0o755); err != nil {
			t.Fatal(err)
		}
		if err := runAs(t, 4242, 4242, m.mnt, setfacl+` -m u:4444:r "$M/f"`, tc.groups...); err != nil {
			t.Fatalf("%s: owner cannot set an ACL", tc.name)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode() & (os.ModeSetgid | os.ModePerm); got != tc.want {
			t.Errorf("%s: mode %v after setfacl, want %v", tc.name, got, tc.want)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}
