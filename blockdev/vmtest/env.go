package vmtest

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// DefaultModules returns the modules /init loads, in this order (insmod
// does not resolve dependencies): virtio disks, device-mapper, dm-crypt,
// and ecb, which xts needs for "ecb(aes)" and which nothing would load
// otherwise. AES and the keyring are built into Debian's cloud kernel.
func DefaultModules() []string {
	return []string{
		"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
		"virtio_blk", "dm-mod", "dm-crypt", "ecb", "xts",
	}
}

// Env is what a boot needs from the host.
type Env struct {
	QEMU       string // qemu-system-x86_64
	Kernel     string // /boot/vmlinuz-<version>
	ModulesDir string // /lib/modules/<version>
	Busybox    string // a statically linked busybox
}

// Packages are the Debian packages that provide Env.
const Packages = "qemu-system-x86 linux-image-cloud-amd64 busybox-static"

// Require returns the host prerequisites, or skips the test when one is
// missing; with CI=true a missing prerequisite fails the test instead,
// so a CI run cannot pass by skipping the VM tests.
func Require(t testing.TB) Env {
	t.Helper()
	env, err := FindEnv()
	if err != nil {
		tstest.Unavailable(t, "vmtest: %v", err)
	}
	return env
}

// FindEnv looks for qemu, the newest Debian cloud kernel with its
// modules, and busybox-static.
func FindEnv() (Env, error) {
	var env Env
	var err error
	if env.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return env, fmt.Errorf("qemu-system-x86_64 not found; install %s", Packages)
	}
	if env.Kernel, env.ModulesDir, err = findKernel("/boot", "/lib/modules"); err != nil {
		return env, err
	}
	if env.Busybox, err = findBusybox(); err != nil {
		return env, err
	}
	return env, nil
}

// findKernel picks the newest /boot/vmlinuz-*-cloud-amd64 that has a
// modules directory and can be read (vmlinuz is root-only on Debian).
func findKernel(bootDir, modRoot string) (string, string, error) {
	kernels, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*-cloud-amd64"))
	slices.SortFunc(kernels, func(a, b string) int { return compareVersions(filepath.Base(a), filepath.Base(b)) })
	for i := len(kernels) - 1; i >= 0; i-- {
		k := kernels[i]
		version := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		mods := filepath.Join(modRoot, version)
		if fi, err := os.Stat(mods); err != nil || !fi.IsDir() {
			continue
		}
		f, err := os.Open(k)
		if err != nil {
			return "", "", fmt.Errorf("cannot read kernel %s: %w", k, err)
		}
		f.Close()
		return k, mods, nil
	}
	return "", "", fmt.Errorf("no Debian cloud kernel with modules (%s/vmlinuz-*-cloud-amd64); install %s", bootDir, Packages)
}

// compareVersions orders "vmlinuz-6.1.0-9-cloud-amd64" before
// "vmlinuz-6.1.0-10-cloud-amd64" by comparing digit runs as numbers.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		if da != "" && db != "" {
			na, _ := strconv.ParseUint(da, 10, 64)
			nb, _ := strconv.ParseUint(db, 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func leadingDigits(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := requireStatic(p); err != nil {
			return "", fmt.Errorf("%w; install busybox-static", err)
		}
		return p, nil
	}
	return "", fmt.Errorf("busybox not found; install busybox-static")
}

// requireStatic checks that an ELF binary has no program interpreter,
// i.e. runs in an initramfs without a dynamic loader and libc.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// findModules maps module names to their .ko files under
// <modulesDir>/kernel. Compressed modules are reported, since busybox
// insmod in the VM cannot load them.
func findModules(modulesDir string, names []string) (map[string]string, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	found := make(map[string]string, len(names))
	compressed := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modulesDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := d.Name()
		if n, ok := strings.CutSuffix(base, ".ko"); ok && want[n] {
			found[n] = p
		} else if i := strings.Index(base, ".ko."); i > 0 && want[base[:i]] {
			compressed[base[:i]] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("search modules in %s: %w", modulesDir, err)
	}
	var missing []string
	for _, n := range names {
		if _, ok := found[n]; ok {
			continue
		}
		if c, ok := compressed[n]; ok {
			missing = append(missing, n+" (only compressed: "+c+")")
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, errors.New("kernel modules not found in " + modulesDir + ": " + strings.Join(missing, ", "))
	}
	return found, nil
}
