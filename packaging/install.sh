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
# but unmount the demo first so it restarts on the new build.
if old=$(command -v kmsagent) && mountpoint -q "$plain"; then
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
mountpoint -q "$plain" || kmsagent mount fuse "$cipher" "$plain"
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
echo "unmount:     kmsagent umount $plain"
echo "manual:      man kmsagent"
echo "daemon:      configure /etc/kmsagent/agent.toml (example: /usr/share/doc/kmsagent/agent.toml.example),"
echo "             then systemctl enable --now kmsagent.socket kmsagent.service"
