#!/usr/bin/env bash
# Installs kmsagent on Debian 12 with the embedded local KMS, creates a demo
# master key and a demo encrypted share, and mounts it. Idempotent: run it
# again to rebuild and remount.
#
#   cipher text:  /var/lib/kmsagent/demo-share      (what a file server stores)
#   plain view:   /mnt/kmsagent-demo                (served by a kmsagent worker)
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
if [ -x /usr/local/sbin/kmsagent ] && mountpoint -q "$plain"; then
  /usr/local/sbin/kmsagent umount "$plain" || /usr/local/sbin/kmsagent umount --lazy "$plain"
fi
version="$(git describe --always --dirty 2>/dev/null || echo dev)"
go build -trimpath -ldflags "-X main.version=$version" -o /usr/local/sbin/kmsagent.new ./cmd/kmsagent
mv /usr/local/sbin/kmsagent.new /usr/local/sbin/kmsagent
install -d -m 0755 /etc/kmsagent
[ -f /etc/kmsagent/agent.toml ] || install -m 0644 packaging/agent.toml.example /etc/kmsagent/agent.toml

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
kmsagent version
kmsagent kms list-keys
echo
kmsagent status
echo
echo "plain view:  ls $plain; cat $plain/README.txt"
echo "cipher text: ls $cipher"
echo "unmount:     kmsagent umount $plain"
