package debvm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Suite is the Debian release of the root file system.
const Suite = "bookworm"

// BasePackages are installed in every root file system on top of
// mmdebstrap's apt variant: systemd as init (systemd-sysv; on bookworm
// the systemd package holds systemd-cryptsetup and the crypttab
// generator), udev for /dev/mapper and /dev/disk links, kmod to load
// modules, fuse3 for shares, and cryptsetup, whose dmsetup dependency
// brings the device-mapper udev rules and whose cryptsetup-bin is the
// LUKS tool.
func BasePackages() []string {
	return []string{
		"systemd-sysv", "udev", "dbus", "kmod", "e2fsprogs", "fuse3", "cryptsetup", "cryptsetup-bin",
	}
}

// baseVersion changes when the way the tar is made changes, so that old
// cached tars are not reused.
const baseVersion = "debvm-base-1"

// baseKey names the cached tar of a package list, whichever order the
// list is in.
func baseKey(packages []string) string {
	p := slices.Clone(packages)
	slices.Sort(p)
	p = slices.Compact(p)
	sum := sha256.Sum256([]byte(baseVersion + "\n" + Suite + "\n" + strings.Join(p, "\n")))
	return Suite + "-" + hex.EncodeToString(sum[:8])
}

// cacheDir is where base tars are kept: kmsagent-test/debvm under the
// user's cache directory ($XDG_CACHE_HOME or ~/.cache), else under
// /var/cache.
func cacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kmsagent-test", "debvm")
	}
	return "/var/cache/kmsagent-test/debvm"
}

// baseTar returns the cached root file system tar for packages, building
// it with mmdebstrap when it is missing. An exclusive lock on a file next
// to it lets concurrent test processes (go test runs packages in
// parallel) build it once; the tar appears under its name only when
// complete.
func baseTar(ctx context.Context, dir string, packages []string, logf func(string, ...any)) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	key := baseKey(packages)
	tarPath := filepath.Join(dir, key+".tar")
	lock, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("lock the cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock the cache: %w", err)
	}
	if _, err := os.Stat(tarPath); err == nil {
		return tarPath, nil
	}
	tmp := tarPath + ".part"
	os.Remove(tmp) // left by a build that was killed
	defer os.Remove(tmp)
	// dpkg's fsyncs buy nothing here: a build that does not finish is
	// thrown away. Without them the build is some 15% faster.
	args := []string{
		"--variant=apt", "--format=tar", "--dpkgopt=force-unsafe-io",
		"--include=" + strings.Join(packages, ","),
		Suite, tmp,
	}
	logf("debvm: building the %s root file system (mmdebstrap %s); cached as %s", Suite, strings.Join(args, " "), tarPath)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mmdebstrap: %v\n%s", err, out[max(0, len(out)-4096):])
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		return "", fmt.Errorf("cache the root file system: %w", err)
	}
	return tarPath, nil
}
