package debvm

import "kmsagent/blockdev/vmtest"

// Paths and names in the guest.
const (
	guestRunner = "/usr/local/lib/debvm/run"
	guestUnit   = "debvm-script.service"
	// fwCfgScript is the fw_cfg name of the boot's script; qemu wants
	// names of user files under opt/.
	fwCfgScript = "opt/debvm/script"
	// cmdlineForcePoweroff on the kernel command line makes the runner
	// power off at once, without stopping units (VM.ForcePoweroff).
	cmdlineForcePoweroff = "debvm.poweroff=force"
)

// runnerScript runs the boot's script. Its output goes to ttyS0 directly
// rather than through the journal, whose console forwarding is
// asynchronous and may lose the last lines at poweroff. It waits for the
// boot to settle first, so that the script sees the system as a user
// would and is-system-running says running rather than starting. The
// startup time (systemd-analyze) tells a slow host from a slow unit. The
// script runs in a subshell: an exit there ends the script only, and the
// exit status still gets reported.
const runnerScript = `#!/bin/sh
exec </dev/null >/dev/ttyS0 2>&1
echo "VMTEST-BOOT kernel=$(uname -r)"
echo "VMTEST-DATA kernel $(uname -r)"
echo "VMTEST-DATA boot-id $(cat /proc/sys/kernel/random/boot_id)"
state=$(systemctl is-system-running --wait)
echo "VMTEST-DATA system-state $state"
echo "VMTEST-DATA startup $(systemd-analyze time | head -n1)"
if [ "$state" != running ]; then
	echo "VMTEST-DATA failed-units $(systemctl list-units --failed --plain --no-legend | cut -d' ' -f1 | tr '\n' ' ')"
fi

check() {
	name=$1
	shift
	if eval "$*"; then
		echo "VMTEST-RESULT $name PASS"
	else
		echo "VMTEST-RESULT $name FAIL $*" | tr '\n' ' '
		echo
	fi
}
data() {
	name=$1
	shift
	echo "VMTEST-DATA $name $*" | tr '\n' ' '
	echo
}

src=/sys/firmware/qemu_fw_cfg/by_name/` + fwCfgScript + `/raw
modprobe qemu_fw_cfg
mkdir -p /run/debvm
if cat "$src" >/run/debvm/script; then
	cd /tmp
	(
		export ` + vmtest.GuestEnvVar + `=1
		. /run/debvm/script
	)
	status=$?
else
	echo "VMTEST-RESULT script FAIL cannot read $src"
	status=125
fi
if [ "$status" -ne 0 ]; then
	systemctl --no-pager --failed
	journalctl --no-pager -b -n 150 -o short-monotonic
fi
echo "VMTEST-EXIT $status"
sync
if grep -qw ` + cmdlineForcePoweroff + ` /proc/cmdline; then
	systemctl poweroff -ff
else
	systemctl --no-block poweroff
fi
`

// unitFile starts the runner once the boot reached multi-user.target. It
// is Type=exec, not oneshot, so that its own start job does not keep the
// system in the "starting" state it waits to leave.
const unitFile = `[Unit]
Description=Test script of this boot
After=multi-user.target

[Service]
Type=exec
ExecStart=` + guestRunner + `

[Install]
WantedBy=multi-user.target
`
