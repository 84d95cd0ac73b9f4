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
	"time"
)

// Machine is one qemu boot of a kernel with its initrd and command line,
// bounded by a timeout, with the console log parsed for markers. Run
// boots its busybox initramfs with it; harnesses that boot a whole root
// file system from a disk (package debvm) use it directly, so that both
// share the qemu command line and the marker protocol.
type Machine struct {
	QEMU    string // qemu-system-x86_64
	Kernel  string
	Initrd  string
	Cmdline string // the kernel command line; it must send the console to ttyS0
	// Disks are raw images attached as /dev/vda, /dev/vdb, ...
	Disks []string
	// Serials, when set, are the disks' virtio serial numbers, by index
	// ("" for none).
	Serials  []string
	MemoryMB int           // 512 when zero
	CPUs     int           // 1 when zero
	Timeout  time.Duration // DefaultTimeout when zero
	// Args are more qemu arguments, appended to the others (e.g. -fw_cfg
	// to pass a file to the guest).
	Args []string
	// OnWait, when set, is called while the guest runs, each time it
	// prints a "VMTEST-WAIT <name>" line (AskHost), with a QMP monitor
	// of the VM; the calls come one at a time, in order. See wait.go.
	OnWait WaitFunc
}

// Boot runs the machine until it powers off, with the console written to
// the file console, and returns what the console log says. With OnWait
// set, the host acts on the running VM when the guest asks (wait.go). The guest
// must print a VMTEST-BOOT line when its test part starts and a
// VMTEST-EXIT line when it ends; a boot without them, one that does not
// power off within the timeout, or a qemu failure is an error, returned
// with the Result so far (its Serial says why).
func (m Machine) Boot(ctx context.Context, console string) (*Result, error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		cmd *exec.Cmd
		ses *session
		err error
	)
	if m.OnWait != nil {
		cmd, ses, err = m.interactive(ctx, console)
	} else {
		var args []string
		if args, err = m.qemuArgs(console); err == nil {
			cmd = exec.CommandContext(ctx, m.QEMU, args...)
		}
	}
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Start()
	if runErr != nil && ses != nil {
		ses.discard()
	}
	if runErr == nil && ses != nil {
		ses.start(m.OnWait)
	}
	if runErr == nil {
		runErr = cmd.Wait()
	}
	res := &Result{Duration: time.Since(start), ExitCode: -1}
	var hostErr error
	if ses != nil {
		hostErr = ses.wait()
	}
	serial, readErr := os.ReadFile(console)
	res.Serial = string(serial)
	p := parseConsole(res.Serial)
	res.Markers, res.ExitCode = p.markers, p.exitCode
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err := fmt.Errorf("VM did not power off within %v (booted: %v)", timeout, p.booted)
		if hostErr != nil {
			err = fmt.Errorf("%w; meanwhile %w", err, hostErr)
		}
		return res, err
	case hostErr != nil:
		return res, hostErr
	case ctx.Err() != nil:
		return res, fmt.Errorf("VM stopped: %w", ctx.Err())
	case runErr != nil:
		return res, fmt.Errorf("qemu: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	case readErr != nil:
		return res, fmt.Errorf("read console log: %w", readErr)
	case !p.booted:
		return res, fmt.Errorf("VM never started the test script (no %s line)", bootPrefix)
	case p.exitCode < 0:
		return res, fmt.Errorf("VM stopped before the script finished (no %s line)", exitPrefix)
	}
	return res, nil
}

// qemuArgs builds the command line: software emulation (KVM cannot run a
// stock kernel on this kind of host), no default devices or network, the
// console on the first serial port into a file, -no-reboot so that
// poweroff and panics (panic=-1) both end qemu.
func (m Machine) qemuArgs(console string) ([]string, error) {
	return m.args("file:" + console)
}

// args is the command line with the console on serial, a -serial
// argument.
func (m Machine) args(serial string) ([]string, error) {
	args := []string{
		"-accel", "tcg",
		"-machine", "pc",
		"-m", fmt.Sprint(cmp0(m.MemoryMB, 512)),
		"-smp", fmt.Sprint(max(m.CPUs, 1)),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-monitor", "none",
		"-no-reboot",
		"-serial", serial,
		"-kernel", m.Kernel,
		"-append", m.Cmdline,
	}
	if m.Initrd != "" {
		args = append(args, "-initrd", m.Initrd)
	}
	if len(m.Disks) > 26 {
		return nil, fmt.Errorf("%d disks; at most 26", len(m.Disks))
	}
	if len(m.Serials) > len(m.Disks) {
		return nil, fmt.Errorf("%d serials for %d disks", len(m.Serials), len(m.Disks))
	}
	for i, d := range m.Disks {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("disk image: %w", err)
		}
		// qemu's option parser takes ",," for a literal comma.
		file := "file=" + strings.ReplaceAll(abs, ",", ",,") + ",format=raw"
		if len(m.Serials) == 0 {
			args = append(args, "-drive", file+",if=virtio")
			continue
		}
		// A serial is a property of the device, not of the drive: spell
		// both out, for every disk so they keep their order on the bus.
		id := fmt.Sprintf("disk%d", i)
		dev := "virtio-blk-pci,drive=" + id
		if i < len(m.Serials) && m.Serials[i] != "" {
			dev += ",serial=" + strings.ReplaceAll(m.Serials[i], ",", ",,")
		}
		args = append(args, "-drive", file+",if=none,id="+id, "-device", dev)
	}
	return append(args, m.Args...), nil
}

// cmp0 returns v, or def when v is zero or less.
func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
