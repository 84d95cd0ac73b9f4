package contentenc_test

// Helpers shared by the interoperability tests: a plaintext tree model,
// mounting Debian's gocryptfs on a cipher directory with an explicit master
// key, and reading and writing cipher trees with this module's packages
// only.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/fuse/contentenc"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/nametransform"
)

// requireGocryptfs returns the gocryptfs binary, once the test can mount
// it here (root, /dev/fuse).
func requireGocryptfs(t *testing.T) string {
	t.Helper()
	tstest.NeedFUSE(t)
	return tstest.NeedTool(t, "gocryptfs", "gocryptfs fuse3")
}

// crypt bundles the three layers for one random master key.
type crypt struct {
	master []byte // hex-encoded for gocryptfs -masterkey=stdin
	names  *nametransform.NameTransform
	cont   *contentenc.ContentEnc
}

func newCrypt(t *testing.T) *crypt {
	t.Helper()
	k, err := secret.Random(cryptocore.KeyLen)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	cc, err := cryptocore.New(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Wipe)
	return &crypt{
		master: []byte(hex.EncodeToString(k.Bytes())),
		names:  nametransform.New(cc.NameBlock()),
		cont:   contentenc.New(cc.ContentAEAD()),
	}
}

// mountGocryptfs mounts cipherDir on mnt with gocryptfs and the master key
// on stdin (no gocryptfs.conf needed, v2 default feature flags), and
// registers the unmount. gocryptfs forks into the background and exits
// only once the mount is up.
func mountGocryptfs(t *testing.T, bin string, c *crypt, cipherDir, mnt string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "gocryptfs.log")
	// A file, not a pipe: the background gocryptfs inherits it and would
	// otherwise keep exec waiting until unmount.
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-q", "-nosyslog", "-masterkey=stdin", cipherDir, mnt)
	cmd.Stdin = bytes.NewReader(append(bytes.Clone(c.master), '\n'))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logPath)
		t.Fatalf("gocryptfs mount: %v\n%s", err, out)
	}
	t.Cleanup(func() { unmount(t, mnt) })
}

// unmount unmounts mnt, retrying while it is busy (a just-closed file can
// keep it busy for a moment), and detaching lazily as a last resort.
// Calling it on a path that is not mounted is a no-op.
func unmount(t *testing.T, mnt string) {
	t.Helper()
	var err error
	tstest.Poll(5*time.Second, func() bool {
		err = unix.Unmount(mnt, 0)
		return !errors.Is(err, unix.EBUSY)
	})
	if err != nil && !errors.Is(err, unix.EINVAL) {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		t.Errorf("unmount %s: %v", mnt, err)
	}
}

// fsck runs gocryptfs's own consistency check on a cipher directory.
func fsck(t *testing.T, bin string, c *crypt, cipherDir string) {
	t.Helper()
	cmd := exec.Command(bin, "-fsck", "-q", "-nosyslog", "-masterkey=stdin", cipherDir)
	cmd.Stdin = bytes.NewReader(append(bytes.Clone(c.master), '\n'))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("gocryptfs -fsck: %v\n%s", err, out)
	}
}

// node is one entry of a plaintext tree, keyed by slash-separated path.
type node struct {
	kind   byte // 'f' file, 'd' directory, 'l' symlink
	data   []byte
	target string
	xattrs map[string]string
}

type tree map[string]node

func (n node) String() string {
	switch n.kind {
	case 'f':
		return fmt.Sprintf("file(%d bytes, xattrs %v)", len(n.data), xattrKeys(n.xattrs))
	case 'd':
		return fmt.Sprintf("dir(xattrs %v)", xattrKeys(n.xattrs))
	}
	return fmt.Sprintf("symlink(%q)", n.target)
}

func xattrKeys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

// compareTrees reports every difference between want and got.
func compareTrees(t *testing.T, want, got tree) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: missing (want %v)", short(p), w)
		case g.kind != w.kind || !bytes.Equal(g.data, w.data) || g.target != w.target:
			t.Errorf("%s: got %v, want %v (content equal: %v)", short(p), g, w, bytes.Equal(g.data, w.data))
		default:
			for _, d := range xattrDiff(g.xattrs, w.xattrs) {
				t.Errorf("%s: %s", short(p), d)
			}
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %v", short(p), g)
		}
	}
}

// xattrDiff describes how got differs from want, without printing whole
// values.
func xattrDiff(got, want map[string]string) []string {
	var d []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("xattr %s missing", k))
		case g != w:
			d = append(d, fmt.Sprintf("xattr %s: %d bytes differ from the %d written", k, len(g), len(w)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("unexpected xattr %s", k))
		}
	}
	return d
}

// short keeps long test names readable in failure messages.
func short(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if len(s) > 40 {
			parts[i] = fmt.Sprintf("%s…(%d bytes)", s[:12], len(s))
		}
	}
	return strings.Join(parts, "/")
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// sortedPaths returns the tree's paths so parents come before children.
func sortedPaths(tr tree) []string {
	var ps []string
	for p := range tr {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}
