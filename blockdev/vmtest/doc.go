// Package vmtest boots a small Linux VM under qemu to test what this
// machine's kernel cannot do (device-mapper, dm-crypt), and reports
// results back through marker lines on the serial console.
//
// Host side: Run builds an initramfs (busybox-static, the binaries and
// files the test asks for, the kernel modules of the Debian cloud
// kernel) and boots it with qemu's software emulation, bounded by a
// timeout, with the test's disk images attached as virtio disks
// (/dev/vda, /dev/vdb, ...). /init loads the modules, mounts proc, sys,
// devtmpfs and a tmpfs on /tmp, runs the test's shell script and powers
// off. The console log comes back in a Result, whose marker lines say
// what passed:
//
//	VMTEST-RESULT <name> PASS|FAIL|SKIP [detail]
//	VMTEST-DATA <name> <value>
//	VMTEST-EXIT <status of the script>
//
// A test can also act on the running VM, as a cloud does on a server:
// with Config.OnWait (Machine.OnWait) set, the guest's line
// "VMTEST-WAIT <name>" (AskHost) makes the host run OnWait with a QMP
// client of qemu's monitor, which hot-plugs and removes disks (AddDisk,
// RemoveDisk), and then answer "VMTEST-DONE <name>" on the guest's
// serial input, which the guest waits for. The console and the monitor
// are then socket pairs handed to qemu, read as the guest writes.
//
// AddHostProgram copies a dynamically linked host program with its
// libraries into the VM; AddUdev adds Debian's udevd and chosen rules
// and returns the script lines that start it, for tests of what udev
// does with our devices.
//
// Machine is the qemu boot itself, for harnesses that boot something
// else with the same markers (package debvm boots a Debian root disk with
// systemd).
//
// BuildTest and BuildBinary compile Go test binaries and commands of this
// module statically (CGO_ENABLED=0) for the VM.
//
// Guest side: a Go test compiled with BuildTest and run by the script
// calls RequireGuest (it skips on the host) and Report, which prints its
// VMTEST-RESULT line when the test ends; Data passes values back.
//
// Prerequisites (Debian 12, with --no-install-recommends): qemu-system-x86,
// linux-image-cloud-amd64, busybox-static. Missing ones skip the tests,
// or fail them when CI=true.
package vmtest
