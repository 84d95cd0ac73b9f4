#!/usr/bin/env bash
# Share benchmark: kmsagent's FUSE file system against gocryptfs (Debian's
# 2.3) and go-fuse's loopback without passthrough, over the same backing
# directory, in one run. Prints seconds per workload and the ratios
# ours/gocryptfs. Run as root (mounts, drop_caches).
#
#   bash fuse/bench/bench.sh [--size-mib 256] [--files 10000] [--rounds 3] [--dir /var/tmp]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH"

size_mib=256
files=10000
rounds=3
base=/var/tmp
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --dir) base="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: $0 [--size-mib N] [--files N] [--rounds N] [--dir DIR]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
command -v gocryptfs >/dev/null || { echo "bench.sh: gocryptfs missing; run packaging/setup-dev.sh" >&2; exit 1; }

work="$(mktemp -d "$base/kmsagent-bench.XXXXXX")"
mounted=()
cleanup() {
  for m in "${mounted[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/kmsagent" ./cmd/kmsagent
go build -o "$work/loopback" ./fuse/bench/loopback

# A tar of small files: one process creates the tree, so the numbers
# measure the file system, not a shell loop.
mkdir -p "$work/src/tree"
python3 - "$work/src/tree" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "file-%05d.txt" % i), "wb") as f:
        f.write(os.urandom(1 + i % 4000))
EOF
tar -C "$work/src" -cf "$work/tree.tar" tree
rm -rf "$work/src"

cat > "$work/agent.toml" <<EOF
[kms.local]
state_dir = "$work/kms"
EOF
ka() { "$work/kmsagent" --config "$work/agent.toml" "$@"; }
ka kms create-key --alias bench >/dev/null
printf 'benchmark-password\n' > "$work/pw"; chmod 600 "$work/pw"

mount_fs() { # name cipher plain
  case "$1" in
    kmsagent) ka mount fuse "$2" "$3" ;;
    gocryptfs) gocryptfs -q -passfile "$work/pw" "$2" "$3" 2>/dev/null ;;
    loopback) "$work/loopback" "$2" "$3" & sleep 0.3; until mountpoint -q "$3"; do sleep 0.1; done ;;
  esac
  mounted+=("$3")
}
umount_fs() { # name plain
  case "$1" in
    kmsagent) ka umount "$2" ;;
    *) fusermount3 -u "$2" ;;
  esac
  # Let the server exit before the next mount.
  while mountpoint -q "$2"; do sleep 0.05; done
}
init_fs() { # name cipher
  case "$1" in
    kmsagent) ka format fuse "$2" --key-id bench >/dev/null ;;
    gocryptfs) gocryptfs -q -init -passfile "$work/pw" "$2" >/dev/null 2>&1 ;;
    loopback) ;;
  esac
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

# Each round runs every file system through every workload; the order
# rotates between rounds because whichever goes first meets a colder disk
# and page cache. Each cell is the median over the rounds.
declare -A samples
order=(kmsagent gocryptfs loopback)
for ((round = 0; round < rounds; round++)); do
  for ((k = 0; k < 3; k++)); do
    fs=${order[(k + round) % 3]}
    cipher="$work/$fs.$round.cipher" plain="$work/$fs.plain"
    mkdir -p "$cipher" "$plain"
    init_fs "$fs" "$cipher"

    mount_fs "$fs" "$cipher" "$plain"
    t=$(now); dd if=/dev/zero of="$plain/big" bs=1M count="$size_mib" conv=fsync status=none; samples[$fs,write]+=" $(elapsed "$t")"
    umount_fs "$fs" "$plain"; drop_caches

    mount_fs "$fs" "$cipher" "$plain"
    t=$(now); dd if="$plain/big" of=/dev/null bs=1M status=none; samples[$fs,read]+=" $(elapsed "$t")"
    rm -f "$plain/big"
    t=$(now); tar -C "$plain" -xf "$work/tree.tar"; sync; samples[$fs,create]+=" $(elapsed "$t")"
    umount_fs "$fs" "$plain"; drop_caches

    mount_fs "$fs" "$cipher" "$plain"
    t=$(now); ls -lR "$plain" >/dev/null; samples[$fs,ls]+=" $(elapsed "$t")"
    t=$(now); rm -rf "$plain/tree"; sync; samples[$fs,rm]+=" $(elapsed "$t")"
    umount_fs "$fs" "$plain"
    rm -rf "$cipher"
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
declare -A result
for fs in "${order[@]}"; do
  for w in write read create ls rm; do
    result[$fs,$w]=$(median "${samples[$fs,$w]}")
  done
done

mbs() { echo "$size_mib / $1" | bc -l; }
printf '\n%-22s %12s %12s %12s %14s\n' "workload" "kmsagent" "gocryptfs" "loopback" "kmsagent/gcfs"
for w in write read; do
  ours=$(mbs "${result[kmsagent,$w]}") theirs=$(mbs "${result[gocryptfs,$w]}") lb=$(mbs "${result[loopback,$w]}")
  printf '%-22s %9.0f MB/s %7.0f MB/s %7.0f MB/s %13.2fx\n' "seq $w ${size_mib} MiB" "$ours" "$theirs" "$lb" "$(echo "$ours / $theirs" | bc -l)"
done
for w in create ls rm; do
  printf '%-22s %10.2f s %10.2f s %10.2f s %13.2fx\n' "$w $files files" "${result[kmsagent,$w]}" "${result[gocryptfs,$w]}" "${result[loopback,$w]}" \
    "$(echo "${result[kmsagent,$w]} / ${result[gocryptfs,$w]}" | bc -l)"
done
echo
echo "medians of $rounds rounds, order rotated; throughput ratio: higher is better (target >= 1.3); metadata time ratio: lower is better (target <= 0.8)"
