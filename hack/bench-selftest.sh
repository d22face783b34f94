#!/usr/bin/env bash
# bench-selftest.sh (make bench-selftest): the benchmarks' verification is
# not for show. With BENCH_SELFTEST=imager (then qemu) every output of that
# tool has one byte flipped after it exits (benchtool corrupt), and each
# script must then die naming a MISMATCH, on a raw output (cmp), a
# streamOptimized and a monolithicSparse one (qemu-img compare), a
# flattened chain, an overwritten output, bench-linear.sh's outputs and an
# import's disk.img; the same rows run clean
# first, so that a death is the corruption's doing. Quick runs on a 64 MiB
# disk: about a minute.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench-selftest: $*" >&2; exit 1; }
dir=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-selftest.XXXXXX)}
[[ -n ${BENCH_DIR:-} ]] || trap 'rm -rf "$dir"' EXIT
export BENCH_DIR=$dir BENCH_SIZE=64M BENCH_QUICK=1 BENCH_RUNS=1 BENCH_FLOOR=0 BENCH_TABLE=0 BENCH_CACHE=unsafe
unset BENCH_STRICT
convert_rows=("sparse->raw -t unsafe" "raw->stream -t unsafe" "raw->mono -t unsafe" "flatten chain3->mono -t unsafe" "overwrite sparse->raw -t unsafe")
export BENCH_LINEAR_SIZES=64M BENCH_LINEAR_CONTENT=64M

# expect WANT SCRIPT ROW [TOOL]: run SCRIPT on ROW alone (corrupting TOOL's
# outputs); WANT is pass or MISMATCH.
expect() {
	local want=$1 script=$2 row=$3 tool=${4:-} rc=0
	local re
	re="^$(printf '%s' "$row" | sed 's/[][\.*^$()+?{}|]/\\&/g')\$"
	BENCH_ROWS=$re BENCH_SELFTEST=$tool "$repo/hack/$script" >"$dir/selftest.log" 2>&1 || rc=$?
	if [[ $want == pass ]]; then
		((rc == 0)) || { cat "$dir/selftest.log" >&2; die "$script \"$row\" failed clean"; }
	elif ((rc == 0)) || ! grep -q MISMATCH "$dir/selftest.log"; then
		cat "$dir/selftest.log" >&2
		die "$script \"$row\" with $tool's outputs corrupted did not die of a MISMATCH (exit $rc)"
	fi
	local why=
	[[ $want == MISMATCH ]] && why=" ($(grep -m1 -o 'MISMATCH: .*' "$dir/selftest.log" | sed 's/ (run .*//'))"
	echo "ok: $script \"$row\"${tool:+ with the outputs of $tool corrupted}: $want$why"
}

for row in "${convert_rows[@]}"; do
	expect pass bench-convert.sh "$row"
	for tool in imager qemu; do expect MISMATCH bench-convert.sh "$row" "$tool"; done
done
# bench-linear.sh verifies its own way (qemu-img compare of raw outputs).
for row in "sparse->raw virt 64M data 64M" "raw->mono virt 64M data 64M"; do
	expect pass bench-linear.sh "$row"
	for tool in imager qemu; do expect MISMATCH bench-linear.sh "$row" "$tool"; done
done
row="http import stream->disk.img -t unsafe"
expect pass bench-import.sh "$row"
for tool in imager qemu; do expect MISMATCH bench-import.sh "$row" "$tool"; done
echo "bench-selftest: every corruption was caught"
