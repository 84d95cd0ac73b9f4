#!/usr/bin/env bash
# Installs kmsagent on Debian 12 from a .deb built here (packaging/build-deb.sh),
# with the embedded local KMS, creates a demo master key and a demo encrypted
# share, and mounts it. Idempotent: run it again to rebuild, reinstall and
# remount.
#
#   cipher text:  /var/lib/kmsagent/demo-share      (what a file server stores)
#   plain view:   /mnt/kmsagent-demo                (served by a kmsagent worker)
#
# It writes no /etc/kmsagent/agent.toml: the demo needs none (the defaults
# are the embedded KMS), and that file is what tells the package that the
# volume daemon is configured and may be enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

bash packaging/go-toolchain.sh
export PATH="/usr/local/go/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive
if ! dpkg-query -W -f='${Status}' fuse3 2>/dev/null | grep -q 'ok installed'; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends fuse3 ca-certificates >/dev/null
fi

cipher=/var/lib/kmsagent/demo-share
plain=/mnt/kmsagent-demo

# Replacing the binary under a running worker is fine (it keeps its inode),
# but unmount the demo first so it restarts on the new build. findmnt reads
# the mount table: a mount whose worker died (killed, or the machine's
# processes ended without an unmount) answers every stat, mountpoint(1)'s
# too, with "Transport endpoint is not connected", and kmsagent umount
# removes it.
if old=$(command -v kmsagent) && findmnt -rn --mountpoint "$plain" >/dev/null; then
  "$old" umount "$plain" || "$old" umount --lazy "$plain"
fi
deb=$(bash packaging/build-deb.sh)
# dpkg -i rather than apt-get install: it reinstalls a rebuild of the same
# version too, and the package only recommends fuse3, installed above.
dpkg -i "$deb" >/dev/null
# Earlier versions of this script installed the binary here, ahead of
# /usr/sbin in root's PATH.
rm -f /usr/local/sbin/kmsagent
hash -r

if ! kmsagent kms describe-key demo >/dev/null 2>&1; then
  kmsagent kms create-key --alias demo --description "demo key made by install.sh" >/dev/null
fi
install -d -m 0700 "$cipher"
install -d -m 0755 "$plain"
[ -f "$cipher/kmsagent.json" ] || kmsagent format fuse "$cipher" --key-id demo
# The daemon mounts the demo share: an admin's own configuration is
# never overwritten.
conf=/etc/kmsagent/agent.toml
if [ ! -e "$conf" ]; then
  install -d -m 0755 /etc/kmsagent
  umask 077
  cat >"$conf" <<CONF
# Written by packaging/install.sh; see /usr/share/doc/kmsagent/agent.toml.example.
[kms]
provider = "local"

[[volume]]
name = "demo"
type = "fuse"
source = "$cipher"
target = "$plain"
auto = true
CONF
  umask 022
fi
# A share mounted by an earlier install without the daemon is left to it.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now kmsagent.socket kmsagent-worker.socket kmsagent.service
  systemctl restart kmsagent.service
else
  # No systemd as PID 1 (a container): run the daemon in the background;
  # a new binary replaces the old daemon, which leaves its mounts to it.
  if pkill -TERM -x -f '/usr/sbin/kmsagent run'; then
    for _ in $(seq 40); do pgrep -x -f '/usr/sbin/kmsagent run' >/dev/null || break; sleep 0.25; done
  fi
  install -d -m 0750 /var/log/kmsagent
  setsid /usr/sbin/kmsagent run </dev/null >>/var/log/kmsagent/run.log 2>&1 &
fi
for _ in $(seq 60); do
  mountpoint -q "$plain" && break
  sleep 0.5
done
mountpoint -q "$plain" || { echo "install.sh: the daemon did not mount $plain; see kmsagent status and /var/log/kmsagent/run.log or journalctl -u kmsagent" >&2; exit 1; }
if [ ! -e "$plain/README.txt" ]; then
  printf 'This file is stored encrypted in %s.\nIts key is wrapped by the KMS key "demo"; see kmsagent kms list-keys.\n' "$cipher" > "$plain/README.txt"
fi

echo
echo "installed:   $deb"
kmsagent version
kmsagent kms list-keys
echo
kmsagent status
echo
echo "plain view:  ls $plain; cat $plain/README.txt"
echo "cipher text: ls $cipher"
echo "daemon:      kmsagent run, configured in $conf; kmsagent umount demo / kmsagent mount demo"
echo "manual:      man kmsagent"
