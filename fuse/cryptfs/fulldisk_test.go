package cryptfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// fillDisk writes a file into dir until the file system is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 64<<10)
	for _, chunk := range []int{64 << 10, 4096, 1} {
		for {
			if _, err := f.Write(buf[:chunk]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
}

// gocryptfsFsck runs gocryptfs -fsck on cipher, so that gocryptfs too
// confirms that every block authenticates and every size is valid.
func gocryptfsFsck(t *testing.T, cipher string, k *testKey) {
	t.Helper()
	bin := tstest.NeedTool(t, "gocryptfs", "gocryptfs")
	cmd := exec.Command(bin, "-fsck", "-nosyslog", "-masterkey=stdin", cipher)
	cmd.Stdin = strings.NewReader(k.hex + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("gocryptfs -fsck: %v\n%s", err, out)
	}
}

// writeRaw writes p with one write(2) and returns what it reported.
func writeRaw(f *os.File, p []byte) (int, error) {
	n, err := unix.Write(int(f.Fd()), p)
	if n < 0 {
		n = 0
	}
	return n, err
}

// TestFullDisk runs out of space on the cipher file system in the middle
// of operations that grow files. A failed operation must change nothing
// (no cut cipher block, no size beyond what was acknowledged), and what
// was written and fsync'ed before must read back intact.
func TestFullDisk(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	old := randBytes(7, 4000)
	// setup writes a 4000-byte file (one partial block) and fsyncs it.
	setup := func(t *testing.T, m *testMount) {
		f, err := os.Create(m.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(old); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// Files opened by a case, closed before the unmount.
	var opened []*os.File
	openRW := func(t *testing.T, m *testMount) *os.File {
		f, err := os.OpenFile(m.path("f"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, f)
		return f
	}
	grown := func(n int) []byte { return append(append([]byte(nil), old...), make([]byte, n-len(old))...) }

	cases := []struct {
		name string
		// op runs on the full disk and returns the content f must have
		// if it succeeded; a failure must leave old.
		op func(t *testing.T, m *testMount) ([]byte, error)
	}{
		{"append", func(t *testing.T, m *testMount) ([]byte, error) {
			add := randBytes(8, 10000)
			_, err := writeRaw(openRW(t, m), append([]byte(nil), add...))
			return append(append([]byte(nil), old...), add...), err
		}},
		{"append-at-offset", func(t *testing.T, m *testMount) ([]byte, error) {
			f := openRW(t, m)
			add := randBytes(9, 100)
			_, err := unix.Pwrite(int(f.Fd()), add, 20000)
			want := grown(20100)
			copy(want[20000:], add)
			return want, err
		}},
		{"rewrite-last-block-longer", func(t *testing.T, m *testMount) ([]byte, error) {
			f := openRW(t, m)
			add := randBytes(10, 90)
			_, err := unix.Pwrite(int(f.Fd()), add, 4000)
			return append(append([]byte(nil), old...), add...), err
		}},
		{"truncate-within-block", func(t *testing.T, m *testMount) ([]byte, error) {
			return grown(4090), os.Truncate(m.path("f"), 4090)
		}},
		{"truncate-extend", func(t *testing.T, m *testMount) ([]byte, error) {
			return grown(10000), os.Truncate(m.path("f"), 10000)
		}},
		{"truncate-extend-aligned", func(t *testing.T, m *testMount) ([]byte, error) {
			return grown(3 * bs), openRW(t, m).Truncate(3 * bs)
		}},
		{"fallocate", func(t *testing.T, m *testMount) ([]byte, error) {
			return grown(10000), unix.Fallocate(int(openRW(t, m).Fd()), 0, 0, 10000)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			disk := tstest.LoopExt4(t, 16<<20)
			cipher := filepath.Join(disk, "cipher")
			if err := os.Mkdir(cipher, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := InitDir(cipher); err != nil {
				t.Fatal(err)
			}
			m := mountFS(t, cipher, k, Options{}, MountOptions{})
			setup(t, m)
			fillDisk(t, disk)
			want, err := c.op(t, m)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("got %v, want success or ENOSPC", err)
				}
				want = old
			}
			for _, f := range opened {
				f.Close()
			}
			opened = nil
			// Read back through a fresh mount, so that no page cache
			// hides what is on disk.
			m.unmount(t)
			m = mountFS(t, cipher, k, Options{}, MountOptions{})
			mustEqualFile(t, m.path("f"), want)
			if s := m.logs.String(); s != "" {
				t.Errorf("warnings:\n%s", s)
			}
			m.unmount(t)
			gocryptfsFsck(t, cipher, k)
		})
	}
	t.Run("write-until-full", func(t *testing.T) {
		disk := tstest.LoopExt4(t, 16<<20)
		cipher := filepath.Join(disk, "cipher")
		if err := os.Mkdir(cipher, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := InitDir(cipher); err != nil {
			t.Fatal(err)
		}
		m := mountFS(t, cipher, k, Options{}, MountOptions{})
		var acked []byte
		var name string
		// Unaligned writes rewrite the last block in place; whole
		// blocks only append.
		sizes := []int{5000, bs, 3000, 70000, 1 << 20}
		for i, size := range sizes {
			name = "w" + strings.Repeat("x", i)
			f, err := os.Create(m.path(name))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() }) // before the unmount
			acked = acked[:0]
			// Short writes are fine (the kernel may split a write
			// into several requests); the next write then fails.
			for j := 0; ; j++ {
				p := randBytes(uint64(100*i+j), size)
				n, err := writeRaw(f, p)
				acked = append(acked, p[:n]...)
				if err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("write %d: %v", j, err)
					}
					break
				}
			}
			f.Close()
			mustEqualFile(t, f.Name(), acked)
			if i < len(sizes)-1 {
				// Make room for the next round.
				os.Truncate(f.Name(), int64(len(acked)/2))
			}
		}
		m.unmount(t)
		m = mountFS(t, cipher, k, Options{}, MountOptions{})
		mustEqualFile(t, m.path(name), acked)
		if s := m.logs.String(); s != "" {
			t.Errorf("warnings:\n%s", s)
		}
		m.unmount(t)
		gocryptfsFsck(t, cipher, k)
	})
}
