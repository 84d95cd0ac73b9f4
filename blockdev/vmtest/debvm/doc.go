// Package debvm boots a Debian bookworm system with systemd as PID 1 in
// qemu, for tests of what only a whole booted system shows: the .deb's
// maintainer scripts and units, /etc/crypttab and /etc/fstab handled by
// systemd's generators, udev links, ordering at boot and at shutdown, a
// second boot of the same disk.
//
// The root file system comes from mmdebstrap (--variant=apt with
// BasePackages and the test's extra packages), built once and cached as a
// tar under the user's cache directory (kmsagent-test/debvm), keyed by
// the package list. Building takes one to five minutes and needs the
// network; every later run reuses the tar. Delete the cache directory to
// pick up newer Debian packages.
//
// New unpacks the tar into a fresh tree, adds the host kernel's modules
// (dm-crypt, fuse, virtio), the test's files, .deb packages (installed
// with dpkg -i in a chroot, so the boot need not install anything),
// /etc/fstab and /etc/crypttab lines and a setup script run in the
// chroot, and makes the tree into an ext4 disk image with mkfs.ext4 -d.
// VM.Boot boots that disk with the host's Debian cloud kernel and its
// initrd (root=/dev/vda) under qemu's software emulation, attaches the
// test's extra disks, and returns what the guest reported, parsed by
// blockdev/vmtest. Boot again for a reboot on the same disk.
//
// In the guest, a service ordered after multi-user.target waits for the
// boot to settle (systemctl is-system-running --wait), reports the
// system state, and runs the script given to Boot, which qemu passes in
// through fw_cfg, so each boot of one disk can run a different script.
// The script runs in /bin/sh with its output on the serial console and
// two helpers defined:
//
//	check NAME 'shell condition'   # VMTEST-RESULT NAME PASS|FAIL
//	data NAME VALUE                # VMTEST-DATA NAME VALUE
//
// Its exit status becomes VMTEST-EXIT; then the service powers the VM off
// with an orderly systemctl poweroff, so stopping units is exercised too,
// or at once with VM.ForcePoweroff (a script must not power off itself).
// The boot reports these data besides the script's:
//
//	kernel         uname -r
//	boot-id        /proc/sys/kernel/random/boot_id
//	system-state   running, degraded, ... as is-system-running says
//	failed-units   when the state is not running: the failed units
//	startup        systemd-analyze time: kernel and userspace start-up
//
// A failing script also dumps the failed units and the end of the
// journal to the console, which Result.Serial holds.
//
// A boot test then reads:
//
//	vm := debvm.New(t, debvm.Config{
//		Debs:     []string{deb},
//		Files:    map[string][]byte{"/etc/kmsagent/agent.toml": config},
//		Crypttab: "data /dev/disk/by-id/virtio-vol-1 ...\n",
//		Fstab:    "/dev/mapper/data /data ext4 defaults 0 2\n",
//	})
//	vm.Disks = []debvm.Disk{{Path: dataImage, Serial: "vol-1"}}
//	res := vm.Boot(t, `check agent 'systemctl is-active --quiet kmsagent'`)
//	res.RequireSuccess(t, "agent")
//
// Requirements: root (mmdebstrap, chroot and mkfs.ext4 -d keep file
// owners), mmdebstrap, e2fsprogs, and what blockdev/vmtest needs, plus
// the cloud kernel's initrd in /boot. Missing ones skip the tests, or
// fail them when CI=true.
package debvm
