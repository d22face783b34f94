#!/usr/bin/env bash
# bench-import.sh: `imager import` of stream.vmdk (bench-convert.sh's
# inputs: qemu-img's streamOptimized image of the mixed disk) over loopback
# HTTP into a fresh disk.img directory, against the incumbent as typed:
# `curl -o dl.vmdk URL && qemu-img convert -t MODE -f vmdk -O raw dl.vmdk
# out/disk.img`, in both cache modes, by the method of bench-convert.sh:
# alternating runs after one warm-up each, sync before each, a fresh output
# directory (and download) every run, every output of both compared with
# src.raw by cmp, medians with min-max. The server is this repo's Go
# hack/fileserver (Range support); the floor section times curl alone from
# it and, for comparison, from python3's http.server.
#
# Env: as bench-convert.sh (BENCH_DIR, BENCH_SIZE, BENCH_SEED, BENCH_RUNS,
# BENCH_QUICK, BENCH_CACHE, BENCH_ROWS, BENCH_FLOOR, BENCH_STRICT,
# BENCH_TABLE, BENCH_SELFTEST, IMAGER), and
#   BENCH_PATHS  what to run (default "stream"); "stream chain" adds the ESXi
#                snapshot chains over the datastore API (hack/bench-chain.sh,
#                its own table)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench-import: $*" >&2; exit 1; }
# shellcheck source=hack/bench-lib.sh
source "$repo/hack/bench-lib.sh"
bench_need_tools
bench_settings
read -r -a cache_modes <<<"${BENCH_CACHE:-unsafe writeback}"
read -r -a paths <<<"${BENCH_PATHS:-stream}"
bench_build
bench_dir bench-import
BENCH_GEN_ONLY=1 BENCH_DIR=$dir "$repo/hack/bench-convert.sh" || die "making the inputs failed"
(cd "$repo" && go build -o bin/fileserver ./hack/fileserver) || die "go build ./hack/fileserver failed"
samples=$dir/samples-import.tsv
: >"$samples"
bench_header

servers=()
cleanup() {
	for s in "${servers[@]}"; do kill "$s" 2>/dev/null; wait "$s" 2>/dev/null || true; done
	rm -rf "$dir/out-qemu" "$dir/out-imager" "$dir/dl.vmdk"
}
trap 'cleanup; [[ -n ${BENCH_DIR:-} ]] || rm -rf "$dir"' EXIT

# serve NAME CMD...: start a server of $dir on a free port (CMD has PORT
# where the port goes); sets url.
serve() {
	local name=$1 port pid
	shift
	for _ in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 20000))
		"${@//PORT/$port}" >"$name.log" 2>&1 &
		pid=$!
		for _ in $(seq 50); do
			curl -sf -o /dev/null "http://127.0.0.1:$port/stamp" && { servers+=("$pid"); url=http://127.0.0.1:$port/stream.vmdk; return 0; }
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill "$pid" 2>/dev/null || true
	done
	die "$name did not start: $(cat "$name.log")"
}
serve fileserver "$repo/bin/fileserver" --dir "$dir" --addr 127.0.0.1:PORT

if [[ " ${paths[*]} " == *" stream "* ]]; then
	printf -v qemu_q '%q ' "${qemu_img[@]}"
	for mode in "${cache_modes[@]}"; do
		row="http import stream->disk.img -t $mode"
		[[ $row =~ $rows_re ]] || continue
		echo "== $row"
		record target "$row" ratio 2.0
		for ((i = 0; i <= runs; i++)); do # run 0 is the warm-up
			for tool in qemu imager; do
				rm -rf out-qemu out-imager dl.vmdk
				mkdir -p "out-$tool"
				case $tool in
				qemu) cmd=(bash -c "curl -sSf -o dl.vmdk '$url' && $qemu_q convert -t $mode -f vmdk -O raw dl.vmdk out-qemu/disk.img") ;;
				imager) cmd=("${imager_cmd[@]}" import -t "$mode" --progress-interval 0 --target out-imager "$url") ;;
				esac
				measure m "${cmd[@]}"
				cmp -s out-$tool/disk.img src.raw || die "MISMATCH: $tool's disk.img of \"$row\" (run $i: ${cmd[*]}) differs from src.raw"
				read -r secs kib <<<"$m"
				if ((i == 0)); then
					echo "  warm-up $tool: $secs s"
					continue
				fi
				echo "  run $i $tool: $secs s, $((kib / 1024)) MiB"
				record run "$row" "$tool" "$secs" "$kib"
			done
		done
	done
	rm -rf out-qemu out-imager dl.vmdk
	record note "http import: the qemu column is the incumbent, curl then qemu-img convert (its peak RSS the larger of the two); the server is hack/fileserver on 127.0.0.1"

	if [[ ${BENCH_FLOOR:-1} == 1 ]]; then
		echo "== floor"
		floor_time "curl -o /dev/null of stream.vmdk from hack/fileserver" curl -sSf -o /dev/null "$url"
		if command -v python3 >/dev/null; then
			go_url=$url
			serve python python3 -m http.server --bind 127.0.0.1 --directory "$dir" PORT
			floor_time "curl -o /dev/null of stream.vmdk from python3 -m http.server" curl -sSf -o /dev/null "$url"
			url=$go_url
		fi
	fi
fi

chain_verdict=MET
if [[ " ${paths[*]} " == *" chain "* ]]; then
	# shellcheck source=hack/bench-chain.sh
	source "$repo/hack/bench-chain.sh"
	chain_rows=()
	BENCH_SIZE=$size_h
	chain_bench || chain_verdict="NOT MET"
fi

if [[ ${BENCH_TABLE:-1} == 1 ]] && grep -q "^run" "$samples"; then
	echo
	strict_flag=()
	[[ $strict == 1 ]] && strict_flag=(-strict)
	"$benchtool" table "${strict_flag[@]}" "$samples" || exit 1
fi
[[ $strict == 1 && $chain_verdict != MET ]] && exit 1
exit 0
