#!/usr/bin/env bash
# bench-convert.sh: imager convert against qemu-img convert, per issue 16's
# method. The disk is deterministic (benchtool gen: pieces of 64 KiB to
# 3 MiB, about 40% zeros left as holes, 20% random, 40% log-like text), its
# images made by qemu-img itself (mono.vmdk monolithicSparse, stream.vmdk
# streamOptimized: the incumbent's own output), and a 3-deep chain over
# mono.vmdk (two children each rewriting 64 scattered MiB, by qemu-io).
#
# Every row runs qemu-img and imager alternately (q, i, q, i, ...): one
# untimed warm-up each (a kind's second cache mode runs right after its
# first, which warmed it, and has none), then BENCH_RUNS timed runs each, every one after
# an untimed sync, into a fresh output (removed before; the overwrite rows
# write onto their previous output instead), and every output of both
# tools is verified after its run (raw: cmp with the truth; VMDK: qemu-img
# compare with the truth, and qemu-img check of imager's): a mismatch
# kills the script. Figures are medians with min-max, peak RSS the maximum
# over the runs.
#
# Rows (each cache mode both tools run with the same -t):
#   sparse->raw, stream->raw            mono.vmdk, stream.vmdk to raw
#   raw->stream                         src.raw to streamOptimized, default
#                                       level; with imager/qemu-img size
#   raw->mono                           src.raw to monolithicSparse
#   flatten chain3->mono                the chain's top to monolithicSparse
#   defaults as typed sparse->raw       no -t for either: imager's durable
#                                       default against qemu-img's unsafe one
#   overwrite sparse->raw (defaults), overwrite sparse->raw -t unsafe
#                                       onto the previous run's output, with
#                                       imager into a new file alternating
#                                       (target: overwrite <= 1.05x fresh)
# then the floor: cp --sparse=always of src.raw, dd of mono's allocated
# bytes (with and without conv=fdatasync), zlib throughput on the disk's
# grains (benchtool floor).
#
# Env:
#   BENCH_DIR    work directory (default: a fresh one under /var/tmp,
#                removed at exit; a given one is kept and its inputs reused
#                while their stamp matches)
#   BENCH_SIZE   virtual disk size (default 1G; K/M/G suffixes)
#   BENCH_SEED   generator seed (default 1)
#   BENCH_RUNS   timed runs per tool and row (default 5, at least 5)
#   BENCH_QUICK=1  a smoke test: BENCH_RUNS defaults to 1, and the table
#                says "QUICK: not a measurement"
#   BENCH_CACHE  cache modes of the per-mode rows (default "unsafe writeback")
#   BENCH_ROWS   extended regex: only the rows whose names match
#   BENCH_FLOOR=0  skip the floor section
#   BENCH_STRICT=1 exit 1 when a target is not met
#   BENCH_TABLE=0  record the samples ($BENCH_DIR/samples-convert.tsv) but
#                print no table (hack/bench-all.sh prints one for all)
#   BENCH_GEN_ONLY=1  only make the inputs in BENCH_DIR
#   BENCH_SELFTEST=imager|qemu  flip a byte of that tool's every output:
#                the script must die of its verification (make bench-selftest)
#   IMAGER       imager binary (default bin/imager, built from this tree)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench-convert: $*" >&2; exit 1; }
# shellcheck source=hack/bench-lib.sh
source "$repo/hack/bench-lib.sh"
bench_need_tools
bench_settings
read -r -a cache_modes <<<"${BENCH_CACHE:-unsafe writeback}"
size=$(numfmt --from=iec "$size_h") || die "bad BENCH_SIZE $size_h"
((size % (1 << 20) == 0 && size >= 64 << 20)) || die "BENCH_SIZE $size_h: want a whole number of MiB, at least 64M"
bench_build
bench_dir bench-convert
samples=$dir/samples-convert.tsv
# About 60% of the disk is data; at most about eight copies of it lie in
# the directory at once (src.raw, the three images, chain.raw, outputs).
need=$((size * 6 / 10 * 8 + (1 << 30)))
avail=$(($(df --output=avail -B1 "$dir" | tail -n1)))
((need <= avail + $(du -s -B1 "$dir" | cut -f1))) || die "$dir has $((avail >> 20)) MiB free, the run needs about $((need >> 20)) MiB: free some, or set BENCH_DIR elsewhere"

# --- inputs ------------------------------------------------------------------
# The stamp names everything the inputs depend on: a changed generator or
# qemu-img makes them again.
stamp="size=$size seed=$seed gen=$(sha256sum "$repo/hack/benchtool/gen.go" | cut -c1-16) $(qemu-img --version | head -n1) chain=v2"
if [[ -f stamp && $(cat stamp) == "$stamp" && -f src.raw && -f mono.vmdk && -f stream.vmdk && -f chain-top.vmdk && -f chain.raw ]]; then
	echo "reusing the inputs in $dir"
else
	rm -f stamp src.raw mono.vmdk stream.vmdk chain-*.vmdk chain.raw
	t0=$SECONDS
	"$benchtool" gen -size "$size" -seed "$seed" -o src.raw || die "benchtool gen failed"
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse src.raw mono.vmdk
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw stream.vmdk
	# The chain: each level rewrites scattered MiB with a byte pattern.
	# Each child is made after its parent's writes (a write gives the
	# parent a new CID, which would break an older child). The truth,
	# chain.raw, is src.raw with the same writes made by qemu-io's raw
	# driver: no VMDK code of either tool in it.
	cp --sparse=always src.raw chain.raw
	shift_mib=0
	parent=mono.vmdk
	for level in mid top; do
		qemu-img create -q -f vmdk -b "$parent" -F vmdk "chain-$level.vmdk"
		parent=chain-$level.vmdk
		cmds=()
		for ((k = 0; k < 64; k++)); do
			cmds+=(-c "write -P $((k % 200 + 1)) $(((k * 15 + shift_mib) % ((size >> 20) - 1)))M 1M")
		done
		shift_mib=7
		qemu-io -f vmdk "${cmds[@]}" "chain-$level.vmdk" >/dev/null
		qemu-io -f raw "${cmds[@]}" chain.raw >/dev/null
	done
	for img in mono.vmdk stream.vmdk; do
		qemu-img compare -q -f vmdk -F raw "$img" src.raw || die "$img does not read as src.raw: the fixture is wrong"
	done
	qemu-img compare -q -f vmdk -F raw chain-top.vmdk chain.raw || die "the chain does not read as chain.raw: the fixture is wrong"
	echo "made the inputs in $((SECONDS - t0)) s: mono.vmdk $(du -h --apparent-size mono.vmdk | cut -f1), stream.vmdk $(du -h --apparent-size stream.vmdk | cut -f1)"
	echo "$stamp" >stamp
fi
[[ ${BENCH_GEN_ONLY:-0} == 1 ]] && exit 0
start=$SECONDS
: >"$samples"
bench_header
record note "convert: a row's second cache mode (-t writeback) runs right after its first, whose runs warmed it, and has no warm-up of its own"

# --- rows --------------------------------------------------------------------
# row_cmd TOOL: the command line of TOOL (qemu, imager, imager-fresh) for
# the current kind and mode: sets cmd, out (its output) and truth.
row_cmd() {
	local tool=$1 t=() in fin fout sub=
	[[ $mode == default ]] || t=(-t "$mode")
	truth=src.raw
	case $kind in
	sparse-raw) in=mono.vmdk fin=vmdk fout=raw ;;
	stream-raw) in=stream.vmdk fin=vmdk fout=raw ;;
	raw-stream) in=src.raw fin=raw fout=vmdk sub=streamOptimized ;;
	raw-mono) in=src.raw fin=raw fout=vmdk sub=monolithicSparse ;;
	flatten) in=chain-top.vmdk fin=vmdk fout=vmdk sub=monolithicSparse truth=chain.raw ;;
	*) die "row kind $kind" ;;
	esac
	out=out-$tool.$fout
	[[ $fout == vmdk ]] && out=out-$tool.vmdk
	local o=()
	[[ -n $sub ]] && o=(-o "subformat=$sub")
	case $tool in
	qemu) cmd=("${qemu_img[@]}" convert "${t[@]}" -f "$fin" -O "$fout" "${o[@]}" "$in" "$out") ;;
	imager*)
		# imager probes a VMDK's format itself, as users type it; a raw
		# source is named.
		local f=()
		[[ $fin == raw ]] && f=(-f raw)
		cmd=("${imager_cmd[@]}" convert "${t[@]}" "${f[@]}" -O "$fout" "${o[@]}" "$in" "$out") ;;
	esac
}

# verify TOOL RUN: TOOL's output is the truth, or the script dies.
verify() {
	local what="$1's output of \"$row\" (run $2: ${cmd[*]})"
	if [[ $out == *.raw ]]; then
		cmp -s -- "$out" "$truth" || die "MISMATCH: $what differs from $truth"
		return
	fi
	qemu-img compare -q -f vmdk -F raw "$out" "$truth" || die "MISMATCH: $what does not read as $truth (qemu-img compare)"
	if [[ $1 == imager* ]]; then
		qemu-img check -q -f vmdk "$out" || die "BROKEN: $what fails qemu-img check"
	fi
}

# run_row NAME KIND MODE TARGET...: the alternating runs of one row, its
# targets recorded (TARGET: KIND=VALUE, as benchtool table reads them);
# warmup=0 skips the warm-up. Sets ran when the row was not filtered out.
run_row() {
	row=$1 kind=$2 mode=$3
	shift 3
	ran=0
	[[ $row =~ $rows_re ]] || return 0
	ran=1
	local tools=(qemu imager) overwrite=0 m secs kib t0=$SECONDS
	[[ $kind == overwrite-* ]] && { overwrite=1 kind=${kind#overwrite-} tools+=(imager-fresh); }
	echo "== $row"
	for tg in "$@"; do record target "$row" "${tg%%=*}" "${tg#*=}"; done
	for tool in "${tools[@]}"; do row_cmd "$tool"; rm -f "$out"; done
	for ((i = 1 - warmup; i <= runs; i++)); do # run 0 is the warm-up
		for tool in "${tools[@]}"; do
			row_cmd "$tool"
			# An overwrite run writes onto the previous run's output
			# (the warm-up's, for the first).
			((overwrite == 1)) && [[ $tool != imager-fresh ]] || rm -f "$out"
			measure m "${cmd[@]}"
			verify "$tool" "$i"
			read -r secs kib <<<"$m"
			if ((i == 0)); then
				echo "  warm-up $tool: ${secs} s"
				continue
			fi
			echo "  run $i $tool: ${secs} s, $((kib / 1024)) MiB"
			record run "$row" "$tool" "$secs" "$kib"
		done
	done
	if [[ $kind == raw-stream ]]; then
		record size "$row" "$(stat -c %s out-imager.vmdk)" "$(stat -c %s out-qemu.vmdk)"
	fi
	rm -f out-qemu.* out-imager.* out-imager-fresh.*
	echo "  ($((SECONDS - t0)) s with the verification)"
}

# A kind's cache modes run one after the other: the first mode's runs warm
# the second's source and binaries, so only the first has a warm-up
# (qemu-img's raw->stream warm-up alone is 40 s at 1 GiB).
for kind_row in "sparse->raw|sparse-raw|ratio=2.0" "stream->raw|stream-raw|ratio=2.2" \
	"raw->stream|raw-stream|ratio=6.5 size=1.01" "raw->mono|raw-mono|ratio=2.5" \
	"flatten chain3->mono|flatten|ratio=1.5"; do
	IFS='|' read -r name kind targets <<<"$kind_row"
	read -r -a targets <<<"$targets"
	warmup=1
	for mode in "${cache_modes[@]}"; do
		run_row "$name -t $mode" "$kind" "$mode" "${targets[@]}" && [[ $ran == 1 ]] && warmup=0
	done
done
warmup=1
run_row "defaults as typed sparse->raw" sparse-raw default ratio=1.0
run_row "overwrite sparse->raw (defaults)" overwrite-sparse-raw default fresh=1.05
run_row "overwrite sparse->raw -t unsafe" overwrite-sparse-raw unsafe fresh=1.05

# --- floor -------------------------------------------------------------------
if [[ ${BENCH_FLOOR:-1} == 1 ]]; then
	echo "== floor"
	alloc=$(($(stat -c '%b * %B' mono.vmdk)))
	alloc_mib=$((alloc >> 20))
	floor_rm=floor.raw
	floor_time "cp --sparse=always src.raw" cp --sparse=always src.raw floor.raw
	floor_time "dd of mono.vmdk's allocated $alloc_mib MiB, bs=1M" dd if=src.raw of=floor.raw bs=1M count="$alloc_mib"
	floor_time "dd of the same, conv=fdatasync" dd if=src.raw of=floor.raw bs=1M count="$alloc_mib" conv=fdatasync
	floor_rm=
	# The level imager compresses at by default, from its own help text.
	level=$("$imager" convert -h 2>&1 | sed -n '/zlib level/s/.*(default \([1-9]\)).*/\1/p' | head -n1)
	"$benchtool" floor -src src.raw -mib 32 -levels "6${level:+,$level}" >>"$samples" || die "benchtool floor failed"
fi

echo "bench-convert: $((SECONDS - start)) s of runs, verification and floor"
if [[ ${BENCH_TABLE:-1} == 1 ]]; then
	echo
	strict_flag=()
	[[ $strict == 1 ]] && strict_flag=(-strict)
	"$benchtool" table "${strict_flag[@]}" "$samples" || exit 1
fi
