#!/bin/bash
# Times `kmsagent image encrypt` and `image decrypt` of the same raw image
# against the references measured in the same run, interleaved round by
# round: `cp` of the file (one read and one write: the floor) and
# `qemu-img convert` to and from LUKS (LUKS1, aes-xts-plain64). Prints the
# median of the rounds for each and the ratios.
#
#   blockdev/image/bench.sh [SIZE_MIB]     (default 1024)
#
# Environment: ROUNDS (default 5); QEMU=0 leaves qemu-img out (about 13 s
# a run per GiB); BENCH_DIR to measure somewhere else than tmpfs.
#
# Needs go and qemu-img (Debian: qemu-utils). Runs as any user; the work
# directory is removed at the end. Every output is synced before the clock
# stops (kmsagent fsyncs; cp and qemu-img are followed by sync FILE), so
# the page cache favours no one. qemu-img runs with a 100 ms key
# derivation (less fails its calibration) so that its number is the data
# path; its default of 2 s would add 2 s to each of its runs.
set -euo pipefail

size_mib=${1:-1024}
rounds=${ROUNDS:-5}
qemu=${QEMU:-1}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# The work directory defaults to /dev/shm (tmpfs) when it has room for the
# input and three outputs, so the numbers measure the tools and not the
# disk, whose write-back speed varies a lot on shared machines.
need_kib=$(( (size_mib * 4 + 64) * 1024 ))
dir=${BENCH_DIR:-}
if [ -z "$dir" ]; then
	dir=${TMPDIR:-/tmp}
	if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 { print $4 }')" -gt "$need_kib" ]; then
		dir=/dev/shm
	fi
fi
if [ "$qemu" = 1 ]; then
	command -v qemu-img >/dev/null || { echo "bench.sh: qemu-img not found (apt-get install qemu-utils), or set QEMU=0" >&2; exit 1; }
fi
work=$(mktemp -d "$dir/kmsagent-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$repo" && go build -o "$work/kmsagent" ./cmd/kmsagent)
printf '[kms.local]\nstate_dir = "%s/kms"\n' "$work" > "$work/agent.toml"
kmsagent() { "$work/kmsagent" --config "$work/agent.toml" "$@"; }
kmsagent kms create-key --alias bench >/dev/null

echo "input: ${size_mib} MiB of random data in $dir ($(df -PT "$dir" | awk 'NR==2 { print $2 }')), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
head -c "$((size_mib << 20))" /dev/urandom > "$work/in.raw"
cat "$work/in.raw" > /dev/null # warm the page cache
printf 'benchmark' > "$work/pass"
qemu_opts=(--object "secret,id=sec0,file=$work/pass")
if [ "$qemu" = 1 ]; then
	# The LUKS image qemu-img decrypts in every round.
	qemu-img convert -q -f raw -O luks "${qemu_opts[@]}" \
		-o "key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256,iter-time=100" \
		"$work/in.raw" "$work/qemu-src.img"
fi
kmsagent image encrypt "$work/in.raw" "$work/ours-src.img" --key-id bench --progress=never >/dev/null

# timed NAME CMD...: runs CMD and appends its wall time to $work/NAME.t
# and its CPU time (user + system, children included) to $work/NAME.c.
timed() {
	local name=$1 times
	shift
	times=$({ TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; } 2>&1)
	echo "$times" | awk '{ print $1 }' >> "$work/$name.t"
	echo "$times" | awk '{ print $2 + $3 }' >> "$work/$name.c"
}
median() { sort -g "$work/$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cp_run() { cp "$work/in.raw" "$work/cp.raw" && sync "$work/cp.raw"; }
enc_run() { kmsagent image encrypt "$work/in.raw" "$work/ours.img" --key-id bench --progress=never; }
dec_run() { kmsagent image decrypt "$work/ours-src.img" "$work/ours.raw" --progress=never; }
qenc_run() {
	qemu-img convert -q -t writeback -f raw -O luks "${qemu_opts[@]}" \
		-o "key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256,iter-time=100" \
		"$work/in.raw" "$work/qemu.img" && sync "$work/qemu.img"
}
qdec_run() {
	qemu-img convert -q -t writeback --image-opts "${qemu_opts[@]}" \
		"driver=luks,key-secret=sec0,file.filename=$work/qemu-src.img" -O raw "$work/qemu.raw" && sync "$work/qemu.raw"
}

for r in $(seq "$rounds"); do
	timed cp cp_run
	rm -f "$work/cp.raw"
	timed enc enc_run
	rm -f "$work/ours.img"
	timed dec dec_run
	cmp -s "$work/in.raw" "$work/ours.raw" || { echo "bench.sh: decrypt did not give the input back" >&2; exit 1; }
	rm -f "$work/ours.raw"
	if [ "$qemu" = 1 ]; then
		timed qenc qenc_run
		rm -f "$work/qemu.img"
		timed qdec qdec_run
		rm -f "$work/qemu.raw"
	fi
	echo "round $r of $rounds done" >&2
done

mbps() { awk -v s="$size_mib" -v t="$1" 'BEGIN { printf "%.0f", s * 1048576 / t / 1e6 }'; }
line() { printf '%-44s %7.3f s %6s MB/s %7.3f s CPU\n' "$1" "$(median "$2.t")" "$(mbps "$(median "$2.t")")" "$(median "$2.c")"; }
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%.2f", a / b }'; }
echo "median of $rounds rounds (wall time, rate, CPU time user + system):"
line "cp" cp
line "kmsagent image encrypt (LUKS2, KMS token)" enc
line "kmsagent image decrypt" dec
if [ "$qemu" = 1 ]; then
	line "qemu-img convert -O luks (iter-time 100)" qenc
	line "qemu-img convert luks -> raw" qdec
fi
for op in enc dec; do
	name=encrypt
	[ $op = dec ] && name=decrypt
	q=""
	[ "$qemu" = 1 ] && q=", $(ratio "q$op.t" "$op.t")x faster than qemu-img (target >= 3.5)"
	echo "$name: $(ratio "$op.t" cp.t)x the time of cp (target <= 1.3), $(ratio "$op.c" cp.c)x its CPU time$q"
done
