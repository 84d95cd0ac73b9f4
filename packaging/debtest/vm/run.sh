#!/usr/bin/env bash
# Boots a Debian 12 VM with systemd as PID 1 (qemu, software emulation) with
# the .deb installed and checks what only a real boot shows: an fstab line
# of type kmsagent mounts at boot through /sbin/mount.kmsagent, postinst
# enables nothing without /etc/kmsagent/agent.toml and starts nothing with
# it, a mount made under ProtectSystem= stays inside the service, the
# packaged unit's sandbox lets a worker mount for the host and keeps it
# across systemctl restart (KillMode=process), and purge keeps the KMS key
# store. About 4 minutes, plus 2 for the first mmdebstrap (cached).
#
#   bash packaging/debtest/vm/run.sh      # prints MARK lines; exit 1 on a failed check
#
# Needs mmdebstrap, qemu-system-x86, linux-image-cloud-amd64 and the
# network to a Debian mirror. Not part of go test: too slow and needs a
# mirror.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${KMSAGENT_VM_CACHE:-/var/cache/kmsagent-vm}
work=$(mktemp -d)
trap 'umount "$work/tree/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$cache"
if [ ! -f "$cache/rootfs.tar" ]; then
  mmdebstrap --variant=apt --include=systemd-sysv,udev,dbus,kmod,e2fsprogs,fuse3,procps \
    bookworm "$cache/rootfs.new.tar" >&2
  mv "$cache/rootfs.new.tar" "$cache/rootfs.tar"
fi
kver=$(basename "$(ls /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)")
kver=${kver#vmlinuz-}

deb=$(DIST="$work/dist" bash "$repo/packaging/build-deb.sh")
# A share with a key of the embedded KMS, made on the host and copied in.
mkdir -p "$work/x" "$work/pre/cipher" "$work/pre/plain"
chmod 0700 "$work/pre/cipher"
dpkg-deb -x "$deb" "$work/x"
printf '[kms.local]\nstate_dir = "%s"\n' "$work/pre/kms" > "$work/pre/host.toml"
k() { "$work/x/usr/sbin/kmsagent" --config "$work/pre/host.toml" "$@"; }
k kms create-key --alias demo >/dev/null
k format fuse "$work/pre/cipher" --key-id demo >/dev/null
k mount fuse "$work/pre/cipher" "$work/pre/plain"
echo hello-from-host > "$work/pre/plain/hello"
k umount "$work/pre/plain"

tree=$work/tree
mkdir "$tree"
tar -C "$tree" -xf "$cache/rootfs.tar"
mkdir -p "$tree/lib/modules" "$tree/srv/plain" "$tree/var/lib/kmsagent"
cp -a "/lib/modules/$kver" "$tree/lib/modules/"
depmod -b "$tree" "$kver"
echo fuse > "$tree/etc/modules-load.d/fuse.conf"
cp -a "$work/pre/cipher" "$tree/srv/cipher"
cp -a "$work/pre/kms" "$tree/var/lib/kmsagent/kms"
cp "$deb" "$tree/root/kmsagent.deb"
install -m 0755 "$here/guest-check.sh" "$tree/usr/local/bin/guest-check.sh"
install -m 0644 "$here/check.service" "$tree/etc/systemd/system/check.service"
ln -s /etc/systemd/system/check.service "$tree/etc/systemd/system/multi-user.target.wants/check.service"
# The getty would hang up the serial port the checks print to.
ln -s /dev/null "$tree/etc/systemd/system/serial-getty@ttyS0.service"
printf '/dev/vda / ext4 defaults 0 1\n/srv/cipher /srv/plain kmsagent defaults,_netdev 0 0\n' > "$tree/etc/fstab"
echo vm > "$tree/etc/hostname"
mount -t proc proc "$tree/proc"
chroot "$tree" dpkg -i /root/kmsagent.deb >&2
umount "$tree/proc"
truncate -s 2G "$work/root.img"
mkfs.ext4 -q -d "$tree" "$work/root.img"
timeout 900 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "/boot/vmlinuz-$kver" -initrd "/boot/initrd.img-$kver" \
  -append 'console=ttyS0 root=/dev/vda rw panic=-1' \
  -drive "file=$work/root.img,format=raw,if=virtio" > "$work/serial.log" 2>&1 || true
marks=$(grep -a -o 'MARK .*' "$work/serial.log" | tr -d '\r')
echo "$marks"
fail=0
expect() {
  grep -qF -- "MARK $1" <<<"$marks" || { echo "FAIL: want \"MARK $1\"" >&2; fail=1; }
}
expect "boot-mount fuse.kmsagent hello-from-host"
expect "enabled-without-config disabled disabled disabled"
expect "dpkg-i-rc 0"
expect "enabled-with-config enabled enabled disabled"
expect "active-after-install inactive inactive"
expect "ns-protectsystem-visible-on-host no status=success"
expect "sandbox-active active"
expect "sandbox-mount-on-host fuse.kmsagent hello-from-host"
expect "sandbox-write written-in-sandbox"
expect "after-restart fuse.kmsagent hello-from-host same-worker=yes"
expect "umount-rc 0"
expect "after-purge keystore=kept helper=gone"
expect "done"
exit $fail
