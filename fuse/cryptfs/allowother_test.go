package cryptfs

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"kmsagent/agent/tstest"
)

// TestAllowOther checks that with allow_other the kernel enforces file
// modes for other users, and that their new files are theirs.
func TestAllowOther(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	m := mountFS(t, newCipherDir(t), k, Options{}, MountOptions{AllowOther: true})
	// The mount point's parent is a private test directory.
	if err := os.Chmod(m.mnt+"/..", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.mnt+"/../..", 0o755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(m.path("private"), 0o700)
	os.Mkdir(m.path("shared"), 0o777)
	os.Chmod(m.path("shared"), 0o777)
	os.WriteFile(m.path("rootfile"), []byte("root"), 0o644)
	os.Chmod(m.mnt, 0o755)

	const uid, gid = 4242, 4343
	as := func(script string) error {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		cmd.Env = []string{"M=" + m.mnt}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("%s: %v: %s", script, err, out)
		}
		return err
	}
	if err := as(`cat "$M/rootfile" >/dev/null`); err != nil {
		t.Error("other user cannot read a 0644 file")
	}
	if as(`echo x > "$M/rootfile"`) == nil {
		t.Error("other user wrote a file it does not own")
	}
	if as(`ls "$M/private"`) == nil {
		t.Error("other user listed a 0700 directory")
	}
	if err := as(`echo mine > "$M/shared/mine" && mkdir "$M/shared/d" && ln -s mine "$M/shared/l"`); err != nil {
		t.Fatal("other user cannot create in a 0777 directory")
	}
	for _, n := range []string{"shared/mine", "shared/d", "shared/l"} {
		st, err := os.Lstat(m.path(n))
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); s.Uid != uid || s.Gid != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", n, s.Uid, s.Gid, uid, gid)
		}
	}
}
