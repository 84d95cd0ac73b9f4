#!/usr/bin/env bash
# Builds dist/kmsagent_<version>_amd64.deb with dpkg-deb, reproducibly: two
# builds of one commit give identical bytes (SOURCE_DATE_EPOCH from the last
# commit for every time stamp, root:root owners, fixed modes, name-sorted
# archives, single-threaded xz). dpkg-deb rather than nfpm: it is on every
# Debian host already, it is what the package is checked against (dpkg,
# lintian), and nothing it would need from nfpm is missing.
#
#   packaging/build-deb.sh            # prints the path of the .deb
#   DIST=/tmp/out packaging/build-deb.sh
#
# The version is 0.0~git<commit date>.<commit>-1 until the repository has a
# v* tag, then <tag>+<commits since>.g<commit>-1; +dirty before the -1 when
# tracked files have uncommitted changes. kmsagent version prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
export LC_ALL=C TZ=UTC
umask 022

: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
  version=${tag#v}
  version=${version/-/+}
  version=${version//-/.}
else
  version="0.0~git$(date -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$(git rev-parse --short=12 HEAD)"
fi
git diff --quiet HEAD -- 2>/dev/null || version+="+dirty"
# The Debian revision: the package is built from this repository's own
# packaging, but as a package of the upstream version (changelog.Debian).
version+="-1"
arch=amd64
dist=${DIST:-dist}
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
doc=$root/usr/share/doc/kmsagent
install -d "$root/DEBIAN" "$root/usr/sbin" "$root/sbin" "$root/lib/systemd/system" \
  "$root/usr/share/man/man8" "$root/usr/share/bash-completion/completions" "$doc"

# -s -w: Debian ships stripped binaries (no symbol table, no DWARF).
# PIE, as Debian builds Go: the code of a root daemon that handles keys
# gets address space layout randomisation. Without cgo the binary needs
# nothing but the dynamic loader (no libc).
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false -buildmode=pie \
  -ldflags "-s -w -buildid= -X main.version=$version" -o "$root/usr/sbin/kmsagent" ./cmd/kmsagent
# /sbin and /usr are different top-level directories: policy 10.5 wants an
# absolute link, and a relative one would break where /sbin is a link to
# usr/sbin (merged /usr).
ln -s /usr/sbin/kmsagent "$root/sbin/mount.kmsagent"

for unit in systemd/*.service systemd/*.socket; do
  install -m 0644 "$unit" "$root/lib/systemd/system/"
done
install -m 0644 packaging/agent.toml.example "$doc/agent.toml.example"

# Early-boot unlock of an encrypted root: the initramfs-tools hook and the
# crypttab keyscript (packaging/initramfs/hook says what goes into the
# initramfs). The hook does nothing unless /etc/crypttab names the
# keyscript; the trigger rebuilds the initramfs when the package changes.
install -d "$root/usr/share/initramfs-tools/hooks" "$root/usr/lib/kmsagent"
install -m 0755 packaging/initramfs/hook "$root/usr/share/initramfs-tools/hooks/kmsagent"
install -m 0755 packaging/initramfs/keyscript "$root/usr/lib/kmsagent/keyscript"

go run ./packaging/gendocs -bin "$root/usr/sbin/kmsagent" -version "$version" \
  -date "$(date -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" \
  -man "$work/kmsagent.8" -completion "$root/usr/share/bash-completion/completions/kmsagent"
gzip -9n < "$work/kmsagent.8" > "$root/usr/share/man/man8/kmsagent.8.gz"
ln -s kmsagent.8.gz "$root/usr/share/man/man8/mount.kmsagent.8.gz"

{
  echo "kmsagent ($version) unstable; urgency=medium"
  echo
  echo "  * Built from commit $(git rev-parse HEAD)."
  echo
  echo " -- $maintainer  $(date -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.Debian.gz"

# The copyright file: kmsagent's own license, and the license (and
# NOTICE) of every module linked into the static binary.
{
  cat <<'EOF'
kmsagent: keeps disks and shares encrypted with keys held in a KMS.

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this software except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

/usr/sbin/kmsagent is statically linked; it contains the Go modules below,
each under its own license.
EOF
  indent() { sed -e 's/^[[:space:]]*$/./' -e 's/^/ /'; }
  echo
  echo "Go standard library $(go env GOVERSION):"
  indent < "$(go env GOROOT)/LICENSE"
  for mod in $(go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}' ./cmd/kmsagent | sort -u); do
    dir=$(go list -m -f '{{.Dir}}' "$mod")
    echo
    echo "$mod $(go list -m -f '{{.Version}}' "$mod"):"
    lic=$(ls "$dir"/LICENSE* "$dir"/COPYING* 2>/dev/null | head -1 || true)
    [ -n "$lic" ] || { echo "build-deb.sh: module $mod has no LICENSE file; add its license to the copyright file by hand" >&2; exit 1; }
    if grep -q 'Apache License' "$lic" && grep -q 'Version 2.0, January 2004' "$lic"; then
      echo " Apache-2.0: see /usr/share/common-licenses/Apache-2.0."
    else
      indent < "$lic"
    fi
    for notice in "$dir"/NOTICE*; do
      [ -f "$notice" ] && indent < "$notice"
    done
  done
} > "$doc/copyright"

for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
done
install -m 0644 packaging/deb/triggers "$root/DEBIAN/triggers"
installed_size=$(find "$root" -path "$root/DEBIAN" -prune -o -type f -printf '%s\n' |
  awk '{ kb += int(($1 + 1023) / 1024) } END { print kb }')
cat > "$root/DEBIAN/control" <<EOF
Package: kmsagent
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: procps
Recommends: fuse3
Suggests: cryptsetup-bin, cryptsetup-initramfs
Section: admin
Priority: optional
Description: keep disks and shares encrypted with keys held in a KMS
 kmsagent encrypts LUKS2 block volumes (dm-crypt) and gocryptfs-compatible
 FUSE shares with data keys wrapped by a KMS: an embedded local KMS, Huawei
 Cloud KMS or AWS KMS. Keys are unwrapped only in short-lived worker
 processes, held in locked memory and wiped on unmount.
 .
 The package contains the kmsagent command, the mount.kmsagent helper for
 fstab, systemd units for the volume daemon and for serving the embedded
 KMS, an initramfs-tools hook and crypttab keyscript that unlock an
 encrypted root through the KMS with instance credentials, and an example
 configuration. No service is enabled until
 /etc/kmsagent/agent.toml exists.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

# Every time stamp is the commit's; dpkg-deb sorts the names itself and
# uses SOURCE_DATE_EPOCH for the ar headers.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$dist"
deb="$dist/kmsagent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$root" "$deb" >/dev/null
echo "$deb"
