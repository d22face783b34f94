#!/usr/bin/env bash
# bench-import.sh: `imager import` of a streamOptimized image over loopback
# HTTP into a sparse disk.img, against the incumbent path (curl to a file,
# then qemu-img convert -O raw), in one run on the same files.
#
# Env:
#   BENCH_DIR   work directory (default /var/tmp/bench-import, kept: the
#               generated images are reused)
#   BENCH_SIZE  virtual disk size (default 1G), BENCH_SEED (default 1)
#   BENCH_RUNS  timed runs per tool, best kept (default 3)
#   BENCH_CACHE cache modes (default "unsafe writeback"), the same -t for both
#   BENCH_STRICT=1  exit 1 when the targets are not met
#   BENCH_PATHS what to run (default "stream chain"): chain is an ESXi
#               snapshot chain over the datastore API (hack/bench-chain.sh)
#
# Peak memory is the maximum RSS over the timed runs (for the incumbent,
# the larger of curl and qemu-img).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${BENCH_DIR:-/var/tmp/bench-import}
runs=${BENCH_RUNS:-3}
read -r -a cache_modes <<<"${BENCH_CACHE:-unsafe writeback}"
die() { echo "bench-import: $*" >&2; exit 1; }

command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
command -v python3 >/dev/null || die "python3 not found"
mkdir -p "$dir"
BENCH_GEN_ONLY=1 BENCH_DIR=$dir "$repo/hack/bench-convert.sh"
(cd "$repo" && go build -o bin/imager ./imager) || die "go build ./imager failed"
imager=$repo/bin/imager
cd "$dir"

port=$((20000 + RANDOM % 20000))
python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >http.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir/out-q" "$dir/out-i" "$dir/dl.vmdk"' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/stamp" && break; sleep 0.1; done
url=http://127.0.0.1:$port/stream.vmdk

measure() { # OUTVAR CMD...: "secs kib"
	local __out=$1 tf
	shift
	tf=$(mktemp time.XXXXXX)
	/usr/bin/time -o "$tf" -f '%e %M' "$@" >cmd.log 2>&1 || { cat cmd.log >&2; die "failed: $*"; }
	printf -v "$__out" '%s' "$(tail -n1 "$tf")"
	rm -f "$tf"
}
run_tool() { # TOOL MODE
	rm -rf out-q out-i dl.vmdk
	mkdir -p out-q out-i
	case $1 in
	incumbent) cmd=(bash -c "curl -sSf -o dl.vmdk '$url' && qemu-img convert -t $2 -f vmdk -O raw dl.vmdk out-q/disk.img && rm -f dl.vmdk") ;;
	imager) cmd=("$imager" import -t "$2" --progress-interval 0 --target out-i "$url") ;;
	esac
	measure m "${cmd[@]}"
}

BENCH_SIZE=${BENCH_SIZE:-1G}
read -r -a paths <<<"${BENCH_PATHS:-stream chain}"
chain_verdict=MET
if [[ " ${paths[*]} " == *" chain "* ]]; then
	# shellcheck source=hack/bench-chain.sh
	source "$repo/hack/bench-chain.sh"
	chain_rows=()
	chain_bench || chain_verdict="NOT MET"
fi
[[ " ${paths[*]} " == *" stream "* ]] || { [[ ${BENCH_STRICT:-0} == 1 && $chain_verdict != MET ]] && exit 1; exit 0; }

rows=()
for mode in "${cache_modes[@]}"; do
	declare -A best=() peak=()
	for tool in incumbent imager; do run_tool $tool "$mode"; done # warm-up
	cmp out-i/disk.img src.raw || die "MISMATCH: imported disk.img differs from src.raw"
	for ((i = 1; i <= runs; i++)); do
		for tool in incumbent imager; do
			run_tool $tool "$mode"
			read -r secs kib <<<"$m"
			echo "  -t $mode $tool run $i: ${secs}s, $((kib / 1024)) MiB"
			if [[ -z ${best[$tool]:-} ]] || awk -v a="$secs" -v b="${best[$tool]}" 'BEGIN{exit !(a < b)}'; then best[$tool]=$secs; fi
			((kib > ${peak[$tool]:-0})) && peak[$tool]=$kib
		done
	done
	alloc=$(du -k out-i/disk.img | cut -f1)
	rows+=("http-stream-to-disk.img/$mode ${best[incumbent]} ${best[imager]} ${peak[imager]} ${peak[incumbent]} $alloc")
done

echo
echo "imager $(cd "$repo" && git describe --always --dirty 2>/dev/null || echo '?'), $(qemu-img --version | head -n1), $(curl --version | head -n1 | cut -d' ' -f1-2), $(nproc) CPUs, best of $runs"
printf '%-32s %12s %10s %8s %12s %14s %14s\n' path incumbent_s imager_s ratio imager_MiB incumbent_MiB disk.img_MiB
printf '%s\n' "${rows[@]}" | awk '{ printf "%-32s %12.2f %10.2f %7.2fx %12.1f %14.1f %14.1f\n", $1, $2, $3, ($3 > 0 ? $2 / $3 : 0), $4 / 1024, $5 / 1024, $6 / 1024 }'
verdict=$(printf '%s\n' "${rows[@]}" | awk '{ r = ($3 > 0) ? $2 / $3 : 0
	if (r <= 1) miss = miss sprintf(" %s %.2fx <= 1x;", $1, r)
	if ($4 / 1024 >= 256) miss = miss sprintf(" %s RSS %.0f MiB;", $1, $4 / 1024) }
	END { print (miss == "" ? "MET" : "NOT MET:" miss) }')
echo "targets (faster than curl + qemu-img convert, imager peak RSS < 256 MiB): $verdict"
[[ ${BENCH_STRICT:-0} == 1 && ($verdict != MET || $chain_verdict != MET) ]] && exit 1
exit 0
