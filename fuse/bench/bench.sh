#!/usr/bin/env bash
# Share benchmark: kmsagent's FUSE file system against gocryptfs (Debian's
# 2.3), go-fuse's loopback without passthrough (the cost of FUSE itself)
# and the backing directory itself (native), in one run, over the same
# disk. Prints the medians per workload, the ratios ours/gocryptfs and a
# Markdown table for the README, then the ratio of each round. Run as
# root (mounts, drop_caches).
#
#   bash fuse/bench/bench.sh [--rounds 5] [--dir /var/tmp] [--fs "kmsagent gocryptfs loopback native"]
#       [--only "issue bench meta fio"] [--size-mib 256] [--issue-mib 200] [--files 10000]
#       [--fio-seconds 10] [--fio-mib 64] [-o MOUNT-OPTIONS-FOR-KMSAGENT]
#
# Workloads, each round running every file system through each of them
# in an order that rotates between rounds (whichever goes first meets a
# colder disk and page cache):
#   issue  dd bs=1M conv=fsync of --issue-mib MiB, caches dropped, cat
#   bench  dd bs=1M conv=fsync of --size-mib MiB, remount and caches
#          dropped, dd bs=1M
#   meta   tar -x of --files small files + sync; remount, caches dropped,
#          ls -lR; rm -rf + sync
#   fio    4 jobs of 4 KiB random reads (caches dropped), then 4 jobs of
#          4 KiB random writes, each job on its own --fio-mib MiB file,
#          O_DIRECT (each request reaches the file system), psync engine
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH"

size_mib=256
issue_mib=200
files=10000
rounds=5
base=/var/tmp
fslist="kmsagent gocryptfs loopback native"
only="issue bench meta fio"
fio_seconds=10
fio_mib=64
ka_opts=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --issue-mib) issue_mib="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --dir) base="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --fs) fslist="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --fio-seconds) fio_seconds="$2"; shift 2 ;;
    --fio-mib) fio_mib="$2"; shift 2 ;;
    -o) ka_opts="$2"; shift 2 ;;
    *) sed -n '/^#   bash/,/^#$/p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
for t in gocryptfs fio bc python3; do
  command -v "$t" >/dev/null || { echo "bench.sh: $t missing; run packaging/setup-dev.sh" >&2; exit 1; }
done
wants() { [[ " $only " == *" $1 "* ]]; }
read -r -a order <<<"$fslist"
nfs=${#order[@]}

work="$(mktemp -d "$base/kmsagent-bench.XXXXXX")"
mounted=()
cleanup() {
  for m in "${mounted[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/kmsagent" ./cmd/kmsagent
go build -o "$work/loopback" ./fuse/bench/loopback

if wants meta; then
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
fi

cat > "$work/agent.toml" <<EOF
[kms.local]
state_dir = "$work/kms"
EOF
ka() { "$work/kmsagent" --config "$work/agent.toml" "$@"; }
ka kms create-key --alias bench >/dev/null
printf 'benchmark-password\n' > "$work/pw"; chmod 600 "$work/pw"

# mount_fs name cipher: mounts on a new directory each time and sets mnt
# and plain (where the workloads run; for native the backing directory
# itself). A fresh mount point keeps a mount clear of anything still
# acting on the previous one by path: twice a mount made right after an
# unmount on the same path vanished (ENODEV at INIT, or an empty
# directory after a remount), cause not found.
nmounts=0
mount_fs() {
  nmounts=$((nmounts + 1))
  mnt="$work/$1.mnt.$nmounts"
  mkdir -p "$mnt"
  plain=$mnt
  [ "$1" = native ] && plain=$2
  set -- "$1" "$2" "$mnt"
  case "$1" in
    kmsagent) ka mount fuse ${ka_opts:+-o "$ka_opts"} "$2" "$3" ;;
    gocryptfs) gocryptfs -q -passfile "$work/pw" "$2" "$3" 2>/dev/null ;;
    loopback) "$work/loopback" "$2" "$3" & ;;
    native) return ;;
  esac
  mounted+=("$3")
  until mountpoint -q "$3"; do sleep 0.05; done
}
umount_fs() { # name plain
  case "$1" in
    kmsagent) ka umount "$2" ;;
    native) return ;;
    *) fusermount3 -u "$2" ;;
  esac
  # Let the server exit before the next mount.
  while mountpoint -q "$2"; do sleep 0.05; done
}
init_fs() { # name cipher
  case "$1" in
    kmsagent) ka format fuse "$2" --key-id bench >/dev/null ;;
    gocryptfs) gocryptfs -q -init -passfile "$work/pw" "$2" >/dev/null 2>&1 ;;
  esac
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

declare -A samples
record() { samples[$1,$2]+=" $3"; }

# srv_cpu mountpoint: the CPU time (user + system, seconds) of the process
# serving the mount so far. Every server's command line ends with its
# mount point, which is new for each mount; the oldest such process is the
# server (kmsagent's reaper, started after its worker, ends the same way).
# The machine is shared, so wall times swing with its load; the CPU time a
# server spends on the same work is the steadier comparison.
tck=$(getconf CLK_TCK)
srv_cpu() {
  local pid
  pid=$(pgrep -o -f -- " $1\$") || { echo 0; return; }
  awk -v tk="$tck" '{ sub(/.*\) /, ""); print ($12 + $13) / tk }' "/proc/$pid/stat"
}
# timed fs workload command...: runs the command, records its wall time
# and the server's CPU time.
timed() {
  local fs=$1 w=$2 t c
  shift 2
  c=$(srv_cpu "$mnt"); t=$(now)
  "$@"
  record "$fs" "$w" "$(elapsed "$t")"
  record "$fs" "$w-cpu" "$(echo "$(srv_cpu "$mnt") - $c" | bc -l)"
}
load_start=$(cut -d' ' -f1 /proc/loadavg)

fio_run() { # dir rw -> IOPS (sum over jobs)
  fio --name=rand --directory="$1" --rw="$2" --bs=4k --direct=1 --ioengine=psync \
    --numjobs=4 --size="${fio_mib}M" --runtime="$fio_seconds" --time_based \
    --group_reporting --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v rw="$2" '{ if (rw == "randread") print $8; else print $49 }'
}

for ((round = 0; round < rounds; round++)); do
  for ((k = 0; k < nfs; k++)); do
    fs=${order[(k + round) % nfs]}
    cipher="$work/$fs.$round.cipher"
    mkdir -p "$cipher"
    init_fs "$fs" "$cipher"
    mount_fs "$fs" "$cipher"

    if wants issue; then
      timed "$fs" issue-write dd if=/dev/zero of="$plain/issue" bs=1M count="$issue_mib" conv=fsync status=none
      drop_caches
      timed "$fs" issue-read cat "$plain/issue" >/dev/null
      rm -f "$plain/issue"
    fi
    if wants bench; then
      timed "$fs" bench-write dd if=/dev/zero of="$plain/big" bs=1M count="$size_mib" conv=fsync status=none
      umount_fs "$fs" "$mnt"; drop_caches; mount_fs "$fs" "$cipher"
      timed "$fs" bench-read dd if="$plain/big" of=/dev/null bs=1M status=none
      rm -f "$plain/big"
    fi
    if wants meta; then
      t=$(now); tar -C "$plain" -xf "$work/tree.tar"; sync; record "$fs" untar "$(elapsed "$t")"
      umount_fs "$fs" "$mnt"; drop_caches; mount_fs "$fs" "$cipher"
      t=$(now); ls -lR "$plain/tree" >/dev/null; record "$fs" ls "$(elapsed "$t")"
      t=$(now); rm -rf "$plain/tree"; sync; record "$fs" rm "$(elapsed "$t")"
    fi
    if wants fio; then
      mkdir -p "$plain/fio"
      # Lay the files out (random data: zeros would be holes in
      # gocryptfs's format), then read them cold.
      fio --name=rand --directory="$plain/fio" --rw=write --bs=1M --numjobs=4 --size="${fio_mib}M" \
        --refill_buffers --end_fsync=1 >/dev/null 2>&1
      drop_caches
      record "$fs" randread "$(fio_run "$plain/fio" randread)"
      record "$fs" randwrite "$(fio_run "$plain/fio" randwrite)"
      rm -rf "$plain/fio"
    fi
    umount_fs "$fs" "$mnt"
    rm -rf "$cipher"
  done
done

median() { printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
declare -A result
workloads=()
wants issue && workloads+=(issue-write issue-read)
wants bench && workloads+=(bench-write bench-read)
wants meta && workloads+=(untar ls rm)
wants fio && workloads+=(randread randwrite)
seq_workloads=()
for w in "${workloads[@]}"; do [[ $w == *-write || $w == *-read ]] && seq_workloads+=("$w"); done
for fs in "${order[@]}"; do
  for w in "${workloads[@]}"; do result[$fs,$w]=$(median "${samples[$fs,$w]}"); done
  for w in "${seq_workloads[@]}"; do result[$fs,$w-cpu]=$(median "${samples[$fs,$w-cpu]}"); done
done

# label, unit and target of each workload; throughput ratios are
# ours/gocryptfs (higher is better), time ratios too (lower is better).
label() {
  case "$1" in
    issue-write) echo "write ${issue_mib} MiB, dd bs=1M conv=fsync" ;;
    issue-read) echo "read ${issue_mib} MiB cold, cat" ;;
    bench-write) echo "write ${size_mib} MiB, dd bs=1M conv=fsync" ;;
    bench-read) echo "read ${size_mib} MiB cold after remount, dd bs=1M" ;;
    untar) echo "untar ${files} files + sync" ;;
    ls) echo "ls -lR, cold" ;;
    rm) echo "rm -rf + sync" ;;
    randread) echo "fio 4 KiB random read, 4 jobs, O_DIRECT" ;;
    randwrite) echo "fio 4 KiB random write, 4 jobs, O_DIRECT" ;;
  esac
}
target() {
  case "$1" in
    *-write | *-read) echo "≥ 1.5×" ;;
    untar | ls | rm) echo "≤ 0.8×" ;;
    rand*) echo "≥ 1.3×" ;;
  esac
}
cell() { # workload value
  case "$1" in
    issue-*) printf '%.0f MB/s' "$(echo "$issue_mib * 1.048576 / $2" | bc -l)" ;;
    bench-*) printf '%.0f MB/s' "$(echo "$size_mib * 1.048576 / $2" | bc -l)" ;;
    untar | ls | rm) printf '%.2f s' "$2" ;;
    rand*) printf '%.0f IOPS' "$2" ;;
  esac
}
ratio() { # workload -> ours/gocryptfs as speed (throughput) or time
  local ours=${result[kmsagent,$1]} theirs=${result[gocryptfs,$1]}
  case "$1" in
    rand*) printf '%.2f×' "$(echo "$ours / $theirs" | bc -l)" ;;
    *) printf '%.2f×' "$(echo "$theirs / $ours" | bc -l)" ;;
  esac
}
has() { [[ " ${order[*]} " == *" $1 "* ]]; }

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), backing $(findmnt -no FSTYPE -T "$base") on $(findmnt -no SOURCE -T "$base")"
echo "bash fuse/bench/bench.sh --rounds $rounds --only \"$only\" --fs \"$fslist\"${ka_opts:+ -o $ka_opts}; medians of $rounds rounds, order rotated; load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end"
echo
hdr="| workload |"; sep="|---|"
for fs in "${order[@]}"; do hdr+=" $fs |"; sep+="---:|"; done
if has kmsagent && has gocryptfs; then hdr+=" kmsagent vs gocryptfs | target |"; sep+="---:|---:|"; fi
echo "$hdr"; echo "$sep"
for w in "${workloads[@]}"; do
  line="| $(label "$w") |"
  for fs in "${order[@]}"; do line+=" $(cell "$w" "${result[$fs,$w]}") |"; done
  if has kmsagent && has gocryptfs; then
    r=$(ratio "$w")
    case "$w" in untar | ls | rm)
      r=$(printf '%.2f×' "$(echo "${result[kmsagent,$w]} / ${result[gocryptfs,$w]}" | bc -l)") ;;
    esac
    line+=" $r | $(target "$w") |"
  fi
  echo "$line"
done
# The ratio of each round, both file systems measured minutes apart:
# on a shared machine the medians of the two can come from different
# rounds, and the spread shows how far one run settles a ratio.
if has kmsagent && has gocryptfs; then
  echo
  echo "Per round, kmsagent vs gocryptfs (as in the table):"
  for w in "${workloads[@]}"; do
    read -r -a ks <<<"${samples[kmsagent,$w]}"
    read -r -a gs <<<"${samples[gocryptfs,$w]}"
    line="- $(label "$w"):"
    for ((i = 0; i < ${#ks[@]}; i++)); do
      case "$w" in
        untar | ls | rm | rand*) r="${ks[i]} / ${gs[i]}" ;;
        *) r="${gs[i]} / ${ks[i]}" ;;
      esac
      line+=" $(printf '%.2f×' "$(echo "$r" | bc -l)")"
    done
    echo "$line"
  done
fi
echo
echo "Throughput rows: kmsagent's speed over gocryptfs's (higher is better). Time rows (untar, ls, rm): kmsagent's time over gocryptfs's (lower is better)."
if [ ${#seq_workloads[@]} -gt 0 ]; then
  # The servers' CPU time for the same sequential workloads (native has
  # no server).
  echo
  hdr="| server CPU time (user + system) |"; sep="|---|"
  for fs in "${order[@]}"; do [ "$fs" = native ] || { hdr+=" $fs |"; sep+="---:|"; }; done
  if has kmsagent && has gocryptfs; then hdr+=" kmsagent vs gocryptfs |"; sep+="---:|"; fi
  echo "$hdr"; echo "$sep"
  for w in "${seq_workloads[@]}"; do
    line="| $(label "$w") |"
    for fs in "${order[@]}"; do [ "$fs" = native ] || line+=" $(printf '%.2f s' "${result[$fs,$w-cpu]}") |"; done
    if has kmsagent && has gocryptfs; then
      line+=" $(printf '%.2f×' "$(echo "${result[kmsagent,$w-cpu]} / ${result[gocryptfs,$w-cpu]}" | bc -l)") |"
    fi
    echo "$line"
  done
  echo
  echo "CPU rows: kmsagent's CPU time over gocryptfs's for the same work (lower is better)."
fi
