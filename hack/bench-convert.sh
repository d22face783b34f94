#!/usr/bin/env bash
# bench-convert.sh: imager convert vs qemu-img convert (VMDK -> raw) on a
# deterministic mixed-content disk (1/4 holes, 1/4 random, 1/2 text-like) as
# monolithicSparse and streamOptimized images.
#
# Env:
#   BENCH_DIR   work directory (default: a fresh mktemp dir under /var/tmp,
#               removed at exit; a given BENCH_DIR is kept, and its source
#               images are reused when they match BENCH_SIZE/BENCH_SEED)
#   BENCH_SIZE  virtual disk size (default 1G; K/M/G suffixes)
#   BENCH_SEED  generator seed (default 1)
#   BENCH_RUNS  timed runs per tool, best is kept (default 3)
#   IMAGER      imager binary (default: bin/imager, built with go build)
#   BENCH_CACHE output cache modes to compare, each run by both tools with
#               the same -t (default "unsafe writeback": unsafe = no flush,
#               qemu-img convert's default; writeback = fsync at the end,
#               imager's default, what a Job needs)
#   BENCH_QEMU_OPTS  extra qemu-img convert options
#   BENCH_STRICT=1  exit 1 when the targets are not met
#   BENCH_GEN_ONLY=1  only make src.raw, mono.vmdk and stream.vmdk in
#               BENCH_DIR (hack/bench-import.sh uses them)
#
# Timings are warm page cache: each tool runs once as warm-up, then the best
# of BENCH_RUNS runs is reported. Peak RSS is the maximum over the timed runs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
size_h=${BENCH_SIZE:-1G}
seed=${BENCH_SEED:-1}
runs=${BENCH_RUNS:-3}
read -r -a qemu_opts <<<"${BENCH_QEMU_OPTS:-}"
read -r -a cache_modes <<<"${BENCH_CACHE:-unsafe writeback}"
imager=${IMAGER:-$repo/bin/imager}

die() { echo "bench-convert: $*" >&2; exit 1; }

command -v qemu-img >/dev/null || die "qemu-img not found (apt-get install -y qemu-utils)"
if [[ ! -x /usr/bin/time ]]; then
	echo "bench-convert: installing GNU time" >&2
	apt-get install -y time >/dev/null || die "/usr/bin/time missing and 'apt-get install -y time' failed"
fi
size=$(numfmt --from=iec "$size_h") || die "bad BENCH_SIZE $size_h"

if [[ -z ${IMAGER:-} ]]; then
	# go build is incremental: a no-op when bin/imager is up to date.
	(cd "$repo" && go build -o bin/imager ./imager) || die "go build ./imager failed"
fi
[[ -x $imager ]] || die "$imager is not executable"

if [[ -n ${BENCH_DIR:-} ]]; then
	dir=$BENCH_DIR
	mkdir -p "$dir"
else
	dir=$(mktemp -d /var/tmp/bench-convert.XXXXXX)
	trap 'rm -rf "$dir"' EXIT
fi
cd "$dir"

# --- 1. deterministic mixed-content raw disk -------------------------------
stamp="size=$size seed=$seed v1"
if [[ -f stamp && $(cat stamp) == "$stamp" && -f src.raw && -f mono.vmdk && -f stream.vmdk ]]; then
	echo "reusing src.raw, mono.vmdk, stream.vmdk in $dir"
else
	rm -f stamp src.raw mono.vmdk stream.vmdk
	mkdir -p gen
	cat >gen/main.go <<'EOF'
// gen writes a deterministic mixed-content raw disk: pieces of 64 KiB to
// 3 MiB that are holes (1/4), random bytes (1/4) or log-like text (1/2).
package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
)

var words = []string{"vmdk", "grain", "table", "kubernetes", "volume", "populator", "kubelet",
	"mounted", "sector", "extent", "descriptor", "stream", "marker", "footer", "the", "a", "of",
	"to", "and", "in", "is", "for", "on", "with", "from", "pod", "node", "disk", "image", "raw"}
var levels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}

func text(r *rand.Rand, b []byte) {
	line := make([]byte, 0, 256)
	for i := 0; i < len(b); {
		line = line[:0]
		line = append(line, "2024-05-"...)
		line = strconv.AppendInt(line, 10+r.Int64N(20), 10)
		line = append(line, 'T')
		line = strconv.AppendInt(line, 10+r.Int64N(14), 10)
		line = append(line, ':')
		line = strconv.AppendInt(line, 10+r.Int64N(50), 10)
		line = append(line, ':')
		line = strconv.AppendInt(line, 10+r.Int64N(50), 10)
		line = append(line, ' ')
		line = append(line, levels[r.IntN(len(levels))]...)
		for n := 3 + r.IntN(10); n > 0; n-- {
			line = append(line, ' ')
			line = append(line, words[r.IntN(len(words))]...)
		}
		line = append(line, " id="...)
		line = strconv.AppendUint(line, r.Uint64N(1<<20), 16)
		line = append(line, '\n')
		i += copy(b[i:], line)
	}
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: gen SIZE SEED OUT")
		os.Exit(2)
	}
	size, err1 := strconv.ParseInt(os.Args[1], 10, 64)
	seed, err2 := strconv.ParseUint(os.Args[2], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 {
		fmt.Fprintln(os.Stderr, "gen: bad SIZE or SEED")
		os.Exit(2)
	}
	f, err := os.Create(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := rand.New(rand.NewPCG(seed, 0x766d646b))
	var key [32]byte
	key[0] = byte(seed)
	noise := rand.NewChaCha8(key)
	buf := make([]byte, 3<<20)
	var counts [3]int64
	for off := int64(0); off < size; {
		n := min(int64(1+r.IntN(48))<<16, size-off)
		kind := r.IntN(4)
		b := buf[:n]
		switch kind {
		case 0: // hole
		case 1:
			noise.Read(b)
		default:
			text(r, b)
		}
		if kind != 0 {
			if _, err := f.WriteAt(b, off); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		counts[min(kind, 2)] += n
		off += n
	}
	if err := f.Truncate(size); err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("src.raw: %d MiB zeros, %d MiB random, %d MiB text\n", counts[0]>>20, counts[1]>>20, counts[2]>>20)
}
EOF
	t0=$SECONDS
	(cd gen && GOFLAGS= GO111MODULE=on go build -o gen main.go) || die "building the generator failed"
	gen/gen "$size" "$seed" src.raw
	echo "generated src.raw in $((SECONDS - t0)) s"
	t0=$SECONDS
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse src.raw mono.vmdk
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw stream.vmdk
	echo "made mono.vmdk ($(du -h --apparent-size mono.vmdk | cut -f1)) and stream.vmdk ($(du -h --apparent-size stream.vmdk | cut -f1)) in $((SECONDS - t0)) s"
	echo "$stamp" >stamp
fi
if [[ ${BENCH_GEN_ONLY:-0} == 1 ]]; then
	exit 0
fi
# A 3-deep chain over mono.vmdk for the flatten row: each level rewrites
# scattered MiB with new data.
if [[ ! -f chain-top.vmdk || chain-top.vmdk -ot mono.vmdk ]]; then
	rm -f chain-*.vmdk
	shift_mib=0
	parent=mono.vmdk
	for level in mid top; do
		# Each child is made after its parent's writes: a write gives the
		# parent a new CID, which would break an older child.
		qemu-img create -q -f vmdk -b "$parent" -F vmdk "chain-$level.vmdk"
		parent=chain-$level.vmdk
		cmds=()
		for ((k = 0; k < 64; k++)); do
			cmds+=(-c "write -P $((k % 200 + 1)) $(((k * 15 + shift_mib) % ((size >> 20) - 1)))M 1M")
		done
		shift_mib=7
		qemu-io -f vmdk "${cmds[@]}" "chain-$level.vmdk" >/dev/null
	done
fi

# --- 2. timed conversions ---------------------------------------------------
# measure OUTVAR CMD...: runs CMD under /usr/bin/time; OUTVAR gets "secs kib".
measure() {
	local __out=$1
	shift
	local tf
	tf=$(mktemp time.XXXXXX)
	if ! /usr/bin/time -o "$tf" -f '%e %M' "$@" >cmd.log 2>&1; then
		cat cmd.log >&2
		die "command failed: $*"
	fi
	printf -v "$__out" '%s' "$(tail -n1 "$tf")"
	rm -f "$tf"
}

# convert TOOL IMG: the command line of TOOL converting IMG to out-TOOL.raw
# with cache mode $mode.
# src.raw is converted the other way, to streamOptimized (out-TOOL.vmdk);
# src.raw:mono to monolithicSparse; chain-top.vmdk is flattened to
# monolithicSparse.
convert_cmd() {
	if [[ $2 == src.raw:mono || $2 == chain-top.vmdk ]]; then
		local in=${2%:mono} f=raw
		[[ $in == *.vmdk ]] && f=vmdk
		case $1 in
		qemu) cmd=(qemu-img convert -t "$mode" "${qemu_opts[@]}" -f "$f" -O vmdk "$in" out-qemu.vmdk) ;;
		imager) cmd=("$imager" convert -t "$mode" -f "$f" -O vmdk "$in" out-imager.vmdk) ;;
		esac
		return
	fi
	if [[ $2 == src.raw ]]; then
		case $1 in
		qemu) cmd=(qemu-img convert -t "$mode" "${qemu_opts[@]}" -f raw -O vmdk -o subformat=streamOptimized src.raw out-qemu.vmdk) ;;
		imager) cmd=("$imager" convert -t "$mode" -f raw -O vmdk -o subformat=streamOptimized src.raw out-imager.vmdk) ;;
		esac
		return
	fi
	case $1 in
	qemu) cmd=(qemu-img convert -t "$mode" "${qemu_opts[@]}" -f vmdk -O raw "$2" out-qemu.raw) ;;
	imager) cmd=("$imager" convert -t "$mode" -O raw "$2" out-imager.raw) ;;
	esac
}

declare -A best_s peak_k
rows=()
for mode in "${cache_modes[@]}"; do
for img in mono.vmdk stream.vmdk src.raw src.raw:mono chain-top.vmdk; do
	for tool in qemu imager; do
		best_s[$tool]=''
		peak_k[$tool]=0
		rm -f "out-$tool.raw" "out-$tool.vmdk"
		convert_cmd "$tool" "$img"
		measure warm "${cmd[@]}"
	done
	for ((i = 1; i <= runs; i++)); do
		for tool in qemu imager; do
			rm -f "out-$tool.raw" "out-$tool.vmdk"
			convert_cmd "$tool" "$img"
			measure m "${cmd[@]}"
			read -r secs kib <<<"$m"
			echo "  $img -t $mode $tool run $i: ${secs}s, $((kib / 1024)) MiB"
			if [[ -z ${best_s[$tool]} ]] || awk -v a="$secs" -v b="${best_s[$tool]}" 'BEGIN{exit !(a < b)}'; then
				best_s[$tool]=$secs
			fi
			if ((kib > peak_k[$tool])); then
				peak_k[$tool]=$kib
			fi
		done
	done
	if [[ $img == src.raw ]]; then
		qemu-img compare -q -f vmdk -F raw out-imager.vmdk src.raw || die "MISMATCH: imager's streamOptimized output differs from src.raw"
		size_ratio=$(awk -v a="$(stat -c %s out-imager.vmdk)" -v b="$(stat -c %s out-qemu.vmdk)" 'BEGIN{printf "%.3f", a / b}')
		echo "  streamOptimized output size imager/qemu-img: $size_ratio"
		img=raw-to-stream
	elif [[ $img == src.raw:mono || $img == chain-top.vmdk ]]; then
		qemu-img compare -q -f vmdk -F vmdk out-imager.vmdk out-qemu.vmdk || die "MISMATCH: imager and qemu-img disagree on $img"
		qemu-img check -q -f vmdk out-imager.vmdk || die "imager's output of $img fails qemu-img check"
		[[ $img == src.raw:mono ]] && img=raw-to-mono || img=flatten-chain3
	elif ! cmp out-qemu.raw out-imager.raw; then
		die "MISMATCH: imager and qemu-img disagree on $img"
	fi
	rows+=("$img/$mode ${best_s[qemu]} ${best_s[imager]} ${peak_k[imager]} ${peak_k[qemu]}")
	rm -f out-qemu.raw out-imager.raw out-qemu.vmdk out-imager.vmdk
done
done

# --- 3. report ----------------------------------------------------------------
echo
echo "imager $(cd "$repo" && git describe --always --dirty 2>/dev/null || echo '?'), $(qemu-img --version | head -n1), $(nproc) CPUs, disk $size_h, best of $runs (warm cache)"
echo "both tools run with the same -t cache mode; extra qemu-img options: ${BENCH_QEMU_OPTS:-none}"
printf '%-22s %10s %10s %8s %12s %12s\n' image qemu-img_s imager_s ratio imager_MiB qemu_MiB
printf '%s\n' "${rows[@]}" | awk '{
	printf "%-22s %10.2f %10.2f %7.2fx %12.1f %12.1f\n", $1, $2, $3, ($3 > 0 ? $2 / $3 : 0), $4 / 1024, $5 / 1024
}'
verdict=$(printf '%s\n' "${rows[@]}" | awk '
	{ ratio = ($3 > 0) ? $2 / $3 : 0
	  if ($1 ~ /^mono/ && ratio < 1) miss = miss sprintf(" monolithicSparse %.2fx < 1x;", ratio)
	  if ($1 ~ /^stream/ && ratio < 2) miss = miss sprintf(" streamOptimized %.2fx < 2x;", ratio)
	  if ($1 ~ /^raw-to-stream/ && ratio < 4) miss = miss sprintf(" raw->streamOptimized %.2fx < 4x;", ratio)
	  if ($1 ~ /^raw-to-mono/ && ratio < 1.5) miss = miss sprintf(" raw->monolithicSparse %.2fx < 1.5x;", ratio)
	  if ($1 ~ /^flatten/ && ratio < 1) miss = miss sprintf(" flatten %.2fx < 1x;", ratio)
	  if ($4 / 1024 >= 100) miss = miss sprintf(" %s imager RSS %.0f MiB >= 100 MiB;", $1, $4 / 1024) }
	END { print (miss == "" ? "MET" : "NOT MET:" miss) }')
echo "targets (imager >= 1x qemu-img on monolithicSparse, >= 2x on streamOptimized, >= 4x raw->streamOptimized, >= 1.5x raw->monolithicSparse, >= 1x flatten, imager peak RSS < 100 MiB): $verdict"
if [[ ${BENCH_STRICT:-0} == 1 && $verdict != MET ]]; then
	exit 1
fi
