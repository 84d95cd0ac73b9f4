package cryptfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// TestOverlayUpper uses directories of a mount as overlayfs upperdir and
// workdir: whiteouts for deleted lower entries, opaque directories over
// lower ones and renames must work, and survive remounting both the share
// and the overlay. overlayfs keeps its state in trusted.overlay.* xattrs,
// or user.overlay.* with userxattr.
func TestOverlayUpper(t *testing.T) {
	tstest.NeedFUSE(t)
	tstest.NeedFilesystem(t, "overlay")
	for _, tc := range []struct {
		name, opts, prefix string
		// dirRename: renaming a lower directory works (redirect_dir=on
		// stores the redirect in an xattr); otherwise EXDEV.
		dirRename bool
	}{
		{"trusted", "", "trusted.overlay.", false},
		{"trusted-redirect", ",redirect_dir=on", "trusted.overlay.", true},
		{"userxattr", ",userxattr", "user.overlay.", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newTestKey(t)
			cipher := newCipherDir(t)
			m := mountFS(t, cipher, k, Options{}, MountOptions{})
			lower := filepath.Join(t.TempDir(), "lower")
			for _, d := range []string{"d", "e", "keep"} {
				if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{"f", "g", "k", "d/x", "e/y", "keep/z"} {
				if err := os.WriteFile(filepath.Join(lower, f), []byte("lower "+f), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []string{"upper", "work"} {
				if err := os.Mkdir(m.path(d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			merged := filepath.Join(t.TempDir(), "merged")
			if err := os.Mkdir(merged, 0o755); err != nil {
				t.Fatal(err)
			}
			mountOverlay := func() {
				t.Helper()
				opts := "lowerdir=" + lower + ",upperdir=" + m.path("upper") + ",workdir=" + m.path("work") + tc.opts
				if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
					t.Fatalf("mount overlay -o %s: %v", opts, err)
				}
			}
			mountOverlay()
			mounted := true
			unmountOverlay := func() {
				t.Helper()
				if mounted {
					if err := unix.Unmount(merged, 0); err != nil {
						t.Fatalf("umount overlay: %v", err)
					}
					mounted = false
				}
			}
			t.Cleanup(func() {
				if mounted {
					_ = unix.Unmount(merged, unix.MNT_DETACH)
				}
			})
			mp := func(p string) string { return filepath.Join(merged, p) }

			// Delete a lower file: a whiteout.
			if err := os.Remove(mp("f")); err != nil {
				t.Fatal(err)
			}
			// A directory over a lower one: opaque.
			if err := os.RemoveAll(mp("d")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(mp("d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mp("d/new"), []byte("upper"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Rename a lower file, and modify one (copy-up).
			if err := os.Rename(mp("g"), mp("h")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mp("k"), []byte("changed"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Rename a lower directory: EXDEV without redirect_dir (mv
			// then copies).
			renamedDir := tc.dirRename
			if err := os.Rename(mp("e"), mp("e2")); tc.dirRename && err != nil || !tc.dirRename && !errors.Is(err, syscall.EXDEV) {
				t.Fatalf("rename of a lower directory: %v", err)
			}

			check := func(when string) {
				t.Helper()
				want := map[string]string{"h": "lower g", "k": "changed", "d/new": "upper", "keep/z": "lower keep/z"}
				gone := []string{"f", "g", "d/x"}
				if renamedDir {
					want["e2/y"] = "lower e/y"
					gone = append(gone, "e")
				}
				for p, v := range want {
					if b, err := os.ReadFile(mp(p)); err != nil || string(b) != v {
						t.Errorf("%s: %s = %q, %v; want %q", when, p, b, err, v)
					}
				}
				for _, p := range gone {
					if _, err := os.Lstat(mp(p)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s: %s still visible: %v", when, p, err)
					}
				}
				if ents, _ := os.ReadDir(mp("d")); len(ents) != 1 {
					t.Errorf("%s: opaque d holds %d entries, want 1", when, len(ents))
				}
				if b, err := os.ReadFile(filepath.Join(lower, "k")); err != nil || string(b) != "lower k" {
					t.Errorf("%s: lower k = %q, %v", when, b, err)
				}
			}
			check("before remount")

			// The upper directory, as seen through the share: a whiteout
			// for f and an opaque marker on d.
			var st unix.Stat_t
			if err := unix.Lstat(m.path("upper", "f"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
				t.Errorf("upper/f is not a whiteout: %v, mode %o rdev %d", err, st.Mode, st.Rdev)
			}
			if v, err := getXattr(m.path("upper", "d"), tc.prefix+"opaque"); err != nil || string(v) != "y" {
				t.Errorf("upper/d %sopaque = %q, %v", tc.prefix, v, err)
			}
			if tc.dirRename {
				if v, err := getXattr(m.path("upper", "e2"), tc.prefix+"redirect"); err != nil || string(v) != "e" {
					t.Errorf("upper/e2 %sredirect = %q, %v", tc.prefix, v, err)
				}
			}

			// Everything persists through a fresh mount of the share.
			unmountOverlay()
			m.unmount(t)
			for _, s := range cipherXattrNames(t, cipher) {
				if strings.Contains(s, "overlay") || !strings.HasPrefix(s, "user.gocryptfs.") && !slices.Contains([]string{"system.posix_acl_access", "system.posix_acl_default"}, s) {
					t.Errorf("stored xattr name %q", s)
				}
			}
			m = mountFS(t, cipher, k, Options{}, MountOptions{})
			mountOverlay()
			mounted = true
			check("after remount")
			unmountOverlay()
		})
	}
}
