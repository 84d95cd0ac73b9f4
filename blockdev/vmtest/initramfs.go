package vmtest

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// Paths inside the VM.
const (
	guestModuleDir = "/lib/modules/vmtest"
	guestScript    = "/vmtest/script.sh"
	guestModules   = "/vmtest/modules"
	guestDisks     = "/vmtest/disks"
	// GuestEnvVar is set to "1" for everything the script runs.
	GuestEnvVar = "VMTEST_GUEST"
)

// initScript is /init. It must bring up just enough of a system for the
// test script: busybox applets, proc/sys/dev, a writable /tmp, the
// modules. Every outcome ends in "poweroff -f" so qemu exits; if even that
// fails, init exits, the kernel panics, and panic=-1 with -no-reboot ends
// qemu too. The markers go to the console, which is the serial port.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/tmp TMPDIR=/tmp
mount -t sysfs sysfs /sys
if ! mount -t devtmpfs devtmpfs /dev; then
	mount -t tmpfs -o mode=0755 tmpfs /dev
	mknod -m 600 /dev/console c 5 1
	mknod -m 666 /dev/null c 1 3
fi
mount -t tmpfs tmpfs /tmp
echo "VMTEST-BOOT kernel=$(uname -r)"
for m in $(cat ` + guestModules + `); do
	if ! insmod ` + guestModuleDir + `/$m.ko; then
		echo "VMTEST-RESULT insmod FAIL $m"
		echo "VMTEST-EXIT 125"
		poweroff -f
	fi
done
# Wait (bounded) for the disk nodes devtmpfs makes as virtio_blk probes.
for d in $(cat ` + guestDisks + `); do
	for i in $(seq 50); do
		[ -b /dev/$d ] && break
		sleep 0.1
	done
	[ -b /dev/$d ] || echo "VMTEST-RESULT disk FAIL /dev/$d missing"
done
export ` + GuestEnvVar + `=1
cd /tmp
sh ` + guestScript + `
echo "VMTEST-EXIT $?"
sync
poweroff -f
sleep 5
exit 1
`

// buildInitramfs writes the initramfs for cfg to dst.
func buildInitramfs(dst string, env Env, cfg *Config) error {
	modules := append(DefaultModules(), cfg.Modules...)
	modPaths, err := findModules(env.ModulesDir, modules)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	w := newCPIOWriter(f)
	for _, d := range []string{"/bin", "/sbin", "/dev", "/proc", "/sys", "/tmp", "/run", "/vmtest"} {
		w.mkdirAll(d)
	}
	w.charDev("/dev/console", 0o600, 5, 1)
	w.charDev("/dev/null", 0o666, 1, 3)
	w.fileFrom("/bin/busybox", 0o755, env.Busybox)
	w.file("/init", 0o755, []byte(initScript))
	w.file(guestScript, 0o755, []byte(cfg.Script))
	w.file(guestModules, 0o644, []byte(strings.Join(modules, "\n")+"\n"))
	w.file(guestDisks, 0o644, []byte(strings.Join(diskNames(len(cfg.Disks)), "\n")+"\n"))
	for _, m := range modules {
		w.fileFrom(path.Join(guestModuleDir, m+".ko"), 0o644, modPaths[m])
	}
	for _, dst := range sortedKeys(cfg.Binaries) {
		w.fileFrom(dst, 0o755, cfg.Binaries[dst])
	}
	for _, dst := range sortedKeys(cfg.Files) {
		w.file(dst, 0o600, cfg.Files[dst])
	}
	err = w.close()
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write initramfs %s: %w", dst, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// diskNames are the guest names of n virtio disks: vda, vdb, ...
func diskNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = "vd" + string(rune('a'+i))
	}
	return names
}
