package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout bounds a boot when Config.Timeout is zero. Software
// emulation on a 2-core machine that also runs other test packages is
// slow and uneven (a boot that takes 20 s on an idle host took over a
// minute under load), so the bound only catches a VM that hangs: it costs
// nothing when the guest powers off in time.
const DefaultTimeout = 4 * time.Minute

// Config describes one boot.
type Config struct {
	// Binaries maps paths in the VM to host files copied in with mode
	// 0755, e.g. {"/bin/dm.test": BuildTest(t, ".")}.
	Binaries map[string]string
	// Files maps paths in the VM to contents, with mode 0600 (keys,
	// configuration).
	Files map[string][]byte
	// Disks are raw images attached as /dev/vda, /dev/vdb, ... Writes
	// from the VM land in them.
	Disks []string
	// Serials, when set, are the disks' virtio serial numbers, by index
	// ("" for none). The guest kernel keeps the first 20 bytes, as a
	// cloud's hypervisor does with a volume id.
	Serials []string
	// Script is run by busybox sh after setup, in /tmp, with
	// VMTEST_GUEST=1; its exit status is reported as VMTEST-EXIT.
	Script string
	// Modules are loaded after DefaultModules (names of .ko files under
	// the kernel's modules directory, without .ko).
	Modules []string
	// Timeout bounds the boot; DefaultTimeout when zero.
	Timeout time.Duration
	// MemoryMB is the VM's memory; 512 when zero.
	MemoryMB int
	// CPUs is the number of virtual CPUs; 1 when zero. More than one
	// runs TCG multi-threaded, one host thread per CPU.
	CPUs int
}

// Result is what a boot produced.
type Result struct {
	Serial   string        // the whole console log
	Markers  []Marker      // RESULT and DATA markers, in order
	ExitCode int           // the script's exit status; -1 if it did not finish
	Duration time.Duration // wall time of qemu
}

// Run boots a VM for cfg and returns its result. It fails the test when
// the VM cannot be built or started, times out, or never reaches the end
// of the script; it skips (or fails under CI=true) when qemu or the
// kernel are missing. What the script reported is for the caller to
// check, e.g. with RequireSuccess.
func Run(t testing.TB, cfg Config) *Result {
	t.Helper()
	env := Require(t)
	res, err := run(t.TempDir(), env, cfg)
	if res != nil {
		t.Logf("vmtest: boot took %v, script exit status %d", res.Duration.Round(time.Millisecond), res.ExitCode)
	}
	if err != nil {
		if res != nil {
			t.Logf("vmtest: console log (last lines):\n%s", tail(res.Serial, 60))
		}
		t.Fatalf("vmtest: %v", err)
	}
	return res
}

func run(dir string, env Env, cfg Config) (*Result, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = 512
	}
	if len(cfg.Disks) > 26 {
		return nil, fmt.Errorf("%d disks; at most 26", len(cfg.Disks))
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := buildInitramfs(initrd, env, &cfg); err != nil {
		return nil, err
	}
	console := filepath.Join(dir, "console.log")
	args, err := qemuArgs(env, cfg, initrd, console)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.QEMU, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	res := &Result{Duration: time.Since(start), ExitCode: -1}
	serial, readErr := os.ReadFile(console)
	res.Serial = string(serial)
	p := parseConsole(res.Serial)
	res.Markers, res.ExitCode = p.markers, p.exitCode
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("VM did not power off within %v (booted: %v)", cfg.Timeout, p.booted)
	case runErr != nil:
		return res, fmt.Errorf("qemu: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	case readErr != nil:
		return res, fmt.Errorf("read console log: %w", readErr)
	case !p.booted:
		return res, fmt.Errorf("VM never reached /init (no %s line)", bootPrefix)
	case p.exitCode < 0:
		return res, fmt.Errorf("VM stopped before the script finished (no %s line)", exitPrefix)
	}
	return res, nil
}

// qemuArgs builds the command line: software emulation (KVM cannot run a
// stock kernel on this kind of host), no default devices or network, the
// console on the first serial port into a file, -no-reboot so that
// poweroff and panics (panic=-1) both end qemu. no_timer_check: under
// emulation on a loaded host the kernel's check that the IO-APIC timer
// ticks can time out and panic the boot ("IO-APIC + timer doesn't
// work"); the emulated timer is fine, only slow.
func qemuArgs(env Env, cfg Config, initrd, console string) ([]string, error) {
	args := []string{
		"-accel", "tcg",
		"-machine", "pc",
		"-m", fmt.Sprint(cfg.MemoryMB),
		"-smp", fmt.Sprint(max(cfg.CPUs, 1)),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-monitor", "none",
		"-no-reboot",
		"-serial", "file:" + console,
		"-kernel", env.Kernel,
		"-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet no_timer_check",
	}
	if len(cfg.Serials) > len(cfg.Disks) {
		return nil, fmt.Errorf("%d serials for %d disks", len(cfg.Serials), len(cfg.Disks))
	}
	for i, d := range cfg.Disks {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("disk image: %w", err)
		}
		// qemu's option parser takes ",," for a literal comma.
		file := "file=" + strings.ReplaceAll(abs, ",", ",,") + ",format=raw"
		if len(cfg.Serials) == 0 {
			args = append(args, "-drive", file+",if=virtio")
			continue
		}
		// A serial is a property of the device, not of the drive: spell
		// both out, for every disk so they keep their order on the bus.
		id := fmt.Sprintf("disk%d", i)
		dev := "virtio-blk-pci,drive=" + id
		if i < len(cfg.Serials) && cfg.Serials[i] != "" {
			dev += ",serial=" + strings.ReplaceAll(cfg.Serials[i], ",", ",,")
		}
		args = append(args, "-drive", file+",if=none,id="+id, "-device", dev)
	}
	return args, nil
}

// Status returns the status of the named result marker, or "" if the VM
// did not report it.
func (r *Result) Status(name string) string {
	status := ""
	for _, m := range r.Markers {
		if m.Kind == "RESULT" && m.Name == name {
			status = m.Status
		}
	}
	return status
}

// Data returns the value of the last DATA marker with this name.
func (r *Result) Data(name string) (string, bool) {
	for i := len(r.Markers) - 1; i >= 0; i-- {
		if m := r.Markers[i]; m.Kind == "DATA" && m.Name == name {
			return m.Detail, true
		}
	}
	return "", false
}

// RequireSuccess fails the test unless the script exited 0, no result
// marker says FAIL, and each named result says PASS. On failure it logs
// the end of the console log.
func (r *Result) RequireSuccess(t testing.TB, names ...string) {
	t.Helper()
	var problems []string
	if r.ExitCode != 0 {
		problems = append(problems, fmt.Sprintf("script exit status %d", r.ExitCode))
	}
	for _, m := range r.Markers {
		if m.Kind == "RESULT" && m.Status == Fail {
			problems = append(problems, fmt.Sprintf("%s FAIL %s", m.Name, m.Detail))
		}
	}
	for _, n := range names {
		switch s := r.Status(n); s {
		case Pass, Fail: // a FAIL is listed above
		case "":
			problems = append(problems, n+": not reported")
		default:
			problems = append(problems, n+": "+s)
		}
	}
	if len(problems) > 0 {
		t.Logf("vmtest: console log (last lines):\n%s", tail(r.Serial, 120))
		t.Fatalf("vmtest: %s", strings.Join(problems, "; "))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
