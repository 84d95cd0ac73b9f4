package vmtest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout bounds a boot when Config.Timeout (Machine.Timeout) is zero. Software
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
	// OnWait, when set, acts on the running VM when the script asks
	// (echo "VMTEST-WAIT name"); see WaitFunc.
	OnWait WaitFunc
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
	if len(cfg.Disks) > 26 {
		return nil, fmt.Errorf("%d disks; at most 26", len(cfg.Disks))
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := buildInitramfs(initrd, env, &cfg); err != nil {
		return nil, err
	}
	return cfg.machine(env, initrd).Boot(context.Background(), filepath.Join(dir, "console.log"))
}

// machine is the boot of the initramfs initrd for cfg.
func (cfg Config) machine(env Env, initrd string) Machine {
	return Machine{
		QEMU:   env.QEMU,
		Kernel: env.Kernel,
		Initrd: initrd,
		// no_timer_check: under emulation on a loaded host the
		// kernel's check that the IO-APIC timer ticks can time out and
		// panic the boot ("IO-APIC + timer doesn't work"); the
		// emulated timer is fine, only slow.
		Cmdline:  "console=ttyS0 panic=-1 quiet no_timer_check",
		Disks:    cfg.Disks,
		Serials:  cfg.Serials,
		MemoryMB: cfg.MemoryMB,
		CPUs:     cfg.CPUs,
		Timeout:  cfg.Timeout,
		OnWait:   cfg.OnWait,
	}
}

// qemuArgs is the qemu command line of cfg's boot.
func qemuArgs(env Env, cfg Config, initrd, console string) ([]string, error) {
	return cfg.machine(env, initrd).qemuArgs(console)
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
