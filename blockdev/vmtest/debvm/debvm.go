package debvm

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmsagent/blockdev/vmtest"
)

// Defaults of a VM.
const (
	DefaultTimeout  = 5 * time.Minute // a boot under software emulation takes 30–60 s when the host is idle
	DefaultMemoryMB = 1024
	DefaultCPUs     = 2
	DefaultDiskMB   = 2048 // the root disk; a sparse file, mostly empty
)

// Config says what goes into the root file system.
type Config struct {
	// Packages are Debian packages installed besides BasePackages, such
	// as the dependencies of a .deb in Debs. Another list makes another
	// cached base.
	Packages []string
	// Debs are host .deb files installed in order with dpkg -i in a
	// chroot of the tree; their maintainer scripts run there (units get
	// enabled, services are not started).
	Debs []string
	// Files maps paths in the guest to contents, written with mode 0600
	// (configuration, keys).
	Files map[string][]byte
	// Binaries maps paths in the guest to host files, copied with mode
	// 0755.
	Binaries map[string]string
	// Fstab is added to /etc/fstab after the root file system's line.
	Fstab string
	// Crypttab, when set, is /etc/crypttab.
	Crypttab string
	// Setup is a shell script run with /bin/sh -e in a chroot of the tree
	// after everything above, e.g. to enable a unit.
	Setup string
	// DiskMB is the size of the root disk; DefaultDiskMB when zero.
	DiskMB int
	// RootDevice is the root file system's device in /etc/fstab and, as
	// VM.RootDevice, on the kernel command line; /dev/vda when empty
	// (/dev/mapper/root_crypt for a root disk the test encrypts).
	RootDevice string
	// Pack, when set, makes the disk image at dst from the finished tree
	// (after Setup) instead of one ext4 file system over a disk of
	// DiskMB: a partitioned disk with /boot on a partition of its own, as
	// image pipelines build them. The tree is removed after it returns.
	Pack func(ctx context.Context, tree, dst string) error
}

// Disk is an extra disk of a VM.
type Disk struct {
	Path   string // a raw image; writes from the guest land in it
	Serial string // the virtio serial, for /dev/disk/by-id/virtio-<serial>; may be empty
}

// VM is a Debian root disk and how to boot it. Its fields may be changed
// between boots.
type VM struct {
	Root     string // the root disk image, /dev/vda in the guest
	Disks    []Disk // /dev/vdb, /dev/vdc, ...
	Timeout  time.Duration
	MemoryMB int
	CPUs     int
	// ForcePoweroff powers the VM off at once after the script, without
	// stopping units, which saves seconds (tens on a busy host) where a
	// boot does not test the shutdown.
	ForcePoweroff bool
	// OnWait, when set, acts on the running VM when the script asks
	// (vmtest.AskHost, or echo "VMTEST-WAIT name"; read -r _ </dev/ttyS0),
	// e.g. to hot-plug a disk through the QMP monitor.
	OnWait vmtest.WaitFunc
	// Kernel and Initrd, when set, are booted instead of the host's
	// cloud kernel and its initrd: the root file system's own, say, for
	// a test of what its initramfs does.
	Kernel, Initrd string
	// RootDevice is root= on the kernel command line (Config.RootDevice).
	RootDevice string
	// Args are more qemu arguments, e.g. -nic user,... for a network
	// (a VM has none by default).
	Args []string

	env    vmtest.Env
	initrd string
	dir    string
	boots  int
}

// New builds the root disk for cfg in a temporary directory of t. It
// skips the test when the host lacks what that needs (fails under
// CI=true), and fails it when the build fails.
func New(t testing.TB, cfg Config) *VM {
	t.Helper()
	env, initrd := requireHost(t)
	ctx := t.Context()
	start := time.Now()
	base, err := baseTar(ctx, cacheDir(), append(BasePackages(), cfg.Packages...), t.Logf)
	if err != nil {
		t.Fatalf("debvm: %v", err)
	}
	t.Logf("debvm: base root file system %s ready after %v", base, time.Since(start).Round(time.Millisecond))
	vm := &VM{
		Timeout:  DefaultTimeout,
		MemoryMB: DefaultMemoryMB,
		CPUs:     DefaultCPUs,
		env:      env,
		initrd:   initrd,
		dir:      t.TempDir(),
	}
	vm.RootDevice = cmp.Or(cfg.RootDevice, "/dev/vda")
	vm.Root = filepath.Join(vm.dir, "root.img")
	start = time.Now()
	if err := buildDisk(ctx, vm.Root, vm.dir, base, env.ModulesDir, cfg); err != nil {
		t.Fatalf("debvm: %v", err)
	}
	t.Logf("debvm: root disk built in %v", time.Since(start).Round(time.Millisecond))
	return vm
}

// requireHost finds the kernel, its initrd and the tools, or skips the
// test (fails it under CI=true).
func requireHost(t testing.TB) (vmtest.Env, string) {
	t.Helper()
	env, initrd, err := findHost()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("debvm: %v (CI=true, so this fails rather than skips)", err)
		}
		t.Skipf("debvm: %v", err)
	}
	return env, initrd
}

func findHost() (vmtest.Env, string, error) {
	env, err := vmtest.FindEnv()
	if err != nil {
		return env, "", err
	}
	if os.Geteuid() != 0 {
		return env, "", errors.New("needs root (chroot, and file owners in the root disk)")
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "tar", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return env, "", fmt.Errorf("%s not found; install mmdebstrap e2fsprogs", tool)
		}
	}
	version := filepath.Base(env.ModulesDir)
	initrd := filepath.Join(filepath.Dir(env.Kernel), "initrd.img-"+version)
	if _, err := os.Stat(initrd); err != nil {
		return env, "", fmt.Errorf("no initrd for kernel %s (%v); install initramfs-tools and run update-initramfs -c -k %s", version, err, version)
	}
	return env, initrd, nil
}

// buildDisk makes the root disk image at dst from the base tar, the
// host's kernel modules and cfg, in a tree under dir that it removes
// again.
func buildDisk(ctx context.Context, dst, dir, base, modulesDir string, cfg Config) error {
	tree, err := os.MkdirTemp(dir, "tree")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	if err := run(ctx, "tar", "--numeric-owner", "-xpf", base, "-C", tree); err != nil {
		return fmt.Errorf("unpack %s: %w", base, err)
	}
	// /lib is a link to usr/lib in the tree; MkdirAll and cp follow it.
	if err := os.MkdirAll(filepath.Join(tree, "lib/modules"), 0o755); err != nil {
		return err
	}
	if err := run(ctx, "cp", "-a", modulesDir, filepath.Join(tree, "lib/modules/")); err != nil {
		return fmt.Errorf("copy kernel modules: %w", err)
	}
	if err := writeSystemFiles(tree, cfg); err != nil {
		return err
	}
	for dst, data := range cfg.Files {
		if err := writeFile(tree, dst, data, 0o600); err != nil {
			return err
		}
	}
	for dst, src := range cfg.Binaries {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("binary for %s: %w", dst, err)
		}
		if err := writeFile(tree, dst, data, 0o755); err != nil {
			return err
		}
	}
	if err := installDebs(ctx, tree, cfg.Debs); err != nil {
		return err
	}
	if cfg.Setup != "" {
		if err := run(ctx, "chroot", tree, "/bin/sh", "-ec", cfg.Setup); err != nil {
			return fmt.Errorf("setup script: %w", err)
		}
	}
	if cfg.Pack != nil {
		if err := cfg.Pack(ctx, tree, dst); err != nil {
			return fmt.Errorf("pack the disk: %w", err)
		}
		return nil
	}
	size := int64(cfg.DiskMB)
	if size <= 0 {
		size = DefaultDiskMB
	}
	if err := os.WriteFile(dst, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(dst, size<<20); err != nil {
		return err
	}
	if err := run(ctx, "mkfs.ext4", "-q", "-F", "-L", "root", "-d", tree, dst); err != nil {
		return fmt.Errorf("make the root disk: %w", err)
	}
	return nil
}

// writeSystemFiles adds what every boot needs: a fixed machine-id (an
// empty one makes systemd treat each boot as the first, and
// systemd-firstboot then prompts on the console), the root file system in
// fstab, the test's crypttab, the runner service, and no getty on the
// serial console, whose hangup at start would cut the runner off it, and
// none of maskedUnits.
func writeSystemFiles(tree string, cfg Config) error {
	id := make([]byte, 16)
	rand.Read(id)
	files := map[string]string{
		"/etc/machine-id":                  hex.EncodeToString(id) + "\n",
		"/etc/hostname":                    "debvm\n",
		"/etc/fstab":                       cmp.Or(cfg.RootDevice, "/dev/vda") + " / ext4 rw 0 0\n" + cfg.Fstab,
		"/etc/systemd/system/" + guestUnit: unitFile,
	}
	if cfg.Crypttab != "" {
		files["/etc/crypttab"] = cfg.Crypttab
	}
	for p, s := range files {
		if err := writeFile(tree, p, []byte(s), 0o644); err != nil {
			return err
		}
	}
	if err := writeFile(tree, guestRunner, []byte(runnerScript), 0o755); err != nil {
		return err
	}
	links := map[string]string{
		"/etc/systemd/system/multi-user.target.wants/" + guestUnit: "/etc/systemd/system/" + guestUnit,
		"/etc/systemd/system/serial-getty@ttyS0.service":           "/dev/null",
	}
	for _, u := range maskedUnits {
		links["/etc/systemd/system/"+u] = "/dev/null"
	}
	for p, target := range links {
		p = filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

// maskedUnits do maintenance at boot or on a timer: they would only slow
// the boot (e2scrub_reap takes seconds under emulation) or, like apt's
// downloads without a network, fail at a time that depends on the clock.
var maskedUnits = []string{
	"e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer", "apt-daily-upgrade.timer",
	"dpkg-db-backup.timer", "fstrim.timer",
}

// writeFile writes a file at the guest path p of tree, with its parent
// directories.
func writeFile(tree, p string, data []byte, mode os.FileMode) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("guest path %q is not absolute", p)
	}
	dst := filepath.Join(tree, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Replace rather than write through: the tree may have a link there.
	os.Remove(dst)
	if err := os.WriteFile(dst, data, mode); err != nil {
		return err
	}
	return os.Chmod(dst, mode) // not masked by the umask
}

// installDebs installs host .deb files in the tree with dpkg in a chroot.
// Services are not started: deb-systemd-invoke sees no running systemd.
func installDebs(ctx context.Context, tree string, debs []string) error {
	if len(debs) == 0 {
		return nil
	}
	stage, err := os.MkdirTemp(filepath.Join(tree, "tmp"), "debs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	args := []string{tree, "dpkg", "-i"}
	for i, deb := range debs {
		data, err := os.ReadFile(deb)
		if err != nil {
			return fmt.Errorf("package: %w", err)
		}
		name := fmt.Sprintf("%02d-%s", i, filepath.Base(deb))
		if err := os.WriteFile(filepath.Join(stage, name), data, 0o644); err != nil {
			return err
		}
		args = append(args, "/"+filepath.Join(strings.TrimPrefix(stage, tree), name))
	}
	if err := run(ctx, "chroot", args...); err != nil {
		return fmt.Errorf("install %s: %w", strings.Join(debs, " "), err)
	}
	return nil
}

// run runs a host command, with its output in the error.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Boot boots the VM once, runs script in it (see the package doc) and
// returns what it reported. It fails the test when qemu fails, the boot
// does not reach the script, or the VM does not power off within
// Timeout; what the script reported is for the caller to check, e.g.
// with Result.RequireSuccess.
func (vm *VM) Boot(t testing.TB, script string) *vmtest.Result {
	t.Helper()
	vm.boots++
	scriptPath := filepath.Join(vm.dir, fmt.Sprintf("script-%d.sh", vm.boots))
	if err := os.WriteFile(scriptPath, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	m := vm.machine(scriptPath)
	res, err := m.Boot(t.Context(), filepath.Join(vm.dir, fmt.Sprintf("console-%d.log", vm.boots)))
	if res != nil {
		t.Logf("debvm: boot %d took %v, script exit status %d", vm.boots, res.Duration.Round(time.Millisecond), res.ExitCode)
	}
	if err != nil {
		if res != nil {
			t.Logf("debvm: console log (end):\n%s", res.Serial[max(0, len(res.Serial)-8192):])
		}
		t.Fatalf("debvm: boot %d: %v", vm.boots, err)
	}
	return res
}

// machine is the qemu boot of the VM with the script file passed in
// through fw_cfg.
func (vm *VM) machine(script string) vmtest.Machine {
	m := vmtest.Machine{
		QEMU:     vm.env.QEMU,
		Kernel:   cmp.Or(vm.Kernel, vm.env.Kernel),
		Initrd:   cmp.Or(vm.Initrd, vm.initrd),
		Cmdline:  "root=" + cmp.Or(vm.RootDevice, "/dev/vda") + " rw console=ttyS0 panic=-1 no_timer_check",
		Disks:    []string{vm.Root},
		MemoryMB: vm.MemoryMB,
		CPUs:     vm.CPUs,
		Timeout:  vm.Timeout,
		OnWait:   vm.OnWait,
		Args:     append([]string{"-fw_cfg", "name=" + fwCfgScript + ",file=" + strings.ReplaceAll(script, ",", ",,")}, vm.Args...),
	}
	if vm.ForcePoweroff {
		m.Cmdline += " " + cmdlineForcePoweroff
	}
	serials := false
	for _, d := range vm.Disks {
		m.Disks = append(m.Disks, d.Path)
		serials = serials || d.Serial != ""
	}
	if serials {
		m.Serials = []string{""}
		for _, d := range vm.Disks {
			m.Serials = append(m.Serials, d.Serial)
		}
	}
	return m
}
