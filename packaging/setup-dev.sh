#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12, idempotently.
set -euo pipefail
bash "$(dirname "$0")/go-toolchain.sh"
export PATH="/usr/local/go/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive
need=()
# One package a line: what the tests need and why.
packages=(
  cryptsetup-bin     # LUKS2 interop (luksDump, test-passphrase, token)
  fdisk gdisk        # blockdev/partition, image encrypt --partition: sfdisk makes test images, sfdisk --verify and sgdisk -v check the results
  gocryptfs fuse3    # share interop; fusermount3 for non-root mounts
  acl attr libcap2-bin  # ACL, xattr and file-capability tests of shares
  e2fsprogs xfsprogs dosfstools  # file systems for probes, images and full-disk tests
  ca-certificates xz-utils bc python3
  qemu-system-x86 linux-image-cloud-amd64 busybox-static qemu-utils  # dm-crypt in a VM
  udev dmsetup       # udevd and the device-mapper udev rules (with dmsetup) for the VM tests with udev
  mmdebstrap         # the Debian root file system of the systemd boot tests (blockdev/vmtest/debvm)
  gcc libc6-dev      # go test -race needs cgo
  lintian            # packaging/debtest: the .deb has no lintian errors
  file man-db        # packaging/debtest: binary type; the man page renders without warnings
  systemd            # packaging/debtest: systemd-analyze verify and security of the units
  fio                # fuse/bench: random 4 KiB reads and writes on shares
)
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
tools=/opt/kmsagent-tools/bin
if [ ! -x "$tools/local-kms" ]; then
  mkdir -p "$tools"
  GOBIN="$tools" go install github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6
fi
if [ ! -x "$tools/staticcheck" ]; then
  mkdir -p "$tools"
  GOBIN="$tools" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
