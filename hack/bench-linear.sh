#!/usr/bin/env bash
# bench-linear.sh (make bench-linear): cost must follow allocated data,
# not virtual size (issue 16). One read path (sparse->raw: a
# monolithicSparse image to raw) and one write path (raw->mono: a raw disk
# to monolithicSparse), imager and qemu-img alternating as in
# bench-convert.sh (warm-up, sync before each run, fresh outputs, every
# output verified by qemu-img compare, medians with min-max, peak RSS), at
#   (a) the same content (BENCH_LINEAR_CONTENT, default 1G of
#       benchtool gen's mix) spread over virtual sizes 1G, 4G and 16G:
#       the seconds should stay flat;
#   (b) content growing with the virtual size: 1G, 4G and 16G of it: the
#       seconds per GiB of data should stay flat.
# A point whose files would not fit the free space of BENCH_DIR (four
# copies of its data and 2 GiB to spare) is skipped, and the table says so.
#
# Env: BENCH_DIR (default a fresh directory under /var/tmp, removed),
# BENCH_RUNS (default 5, at least 5), BENCH_QUICK, BENCH_SEED,
# BENCH_LINEAR_SIZES (default "1G 4G 16G"), BENCH_LINEAR_CONTENT (default
# 1G), BENCH_CACHE (default unsafe: the work, not the flush),
# BENCH_ROWS, BENCH_SELFTEST, IMAGER.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench-linear: $*" >&2; exit 1; }
# shellcheck source=hack/bench-lib.sh
source "$repo/hack/bench-lib.sh"
bench_need_tools
bench_settings
read -r -a sizes <<<"${BENCH_LINEAR_SIZES:-1G 4G 16G}"
content_h=${BENCH_LINEAR_CONTENT:-1G}
mode=${BENCH_CACHE:-unsafe}
size_h="(a) $content_h of content in ${sizes[*]}, (b) ${sizes[*]} of content"
bench_build
bench_dir bench-linear
samples=$dir/samples-linear.tsv
: >"$samples"
bench_header

# point VIRTUAL CONTENT: both rows at one point.
point() {
	local virt_h=$1 cont_h=$2 virt cont pdir need avail
	virt=$(numfmt --from=iec "$virt_h") cont=$(numfmt --from=iec "$cont_h")
	local name="virt $virt_h data $cont_h"
	# About 60% of the content is data (40% is holes); four copies of it
	# at once at most: src.raw, mono.vmdk and both tools' outputs.
	need=$((cont * 6 / 10 * 4 + (2 << 30)))
	avail=$(($(df --output=avail -B1 "$dir" | tail -n1)))
	if ((need > avail)); then
		echo "== $name: SKIPPED, needs $((need >> 30)) GiB free, $dir has $((avail >> 30)) GiB"
		record note "$name: SKIPPED: needs $((need >> 30)) GiB free (4 copies of its data + 2 GiB), $dir has $((avail >> 30)) GiB"
		return 0
	fi
	pdir=$dir/v$virt_h-c$cont_h
	mkdir -p "$pdir"
	(
		cd "$pdir"
		local stamp
		stamp="virt=$virt content=$cont seed=$seed gen=$(sha256sum "$repo/hack/benchtool/gen.go" | cut -c1-16) $(qemu-img --version | head -n1)"
		if [[ ! -f stamp || $(cat stamp) != "$stamp" || ! -f mono.vmdk ]]; then
			rm -f stamp src.raw mono.vmdk
			"$benchtool" gen -size "$virt" -content "$cont" -seed "$seed" -o src.raw || die "benchtool gen failed"
			qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse src.raw mono.vmdk
			echo "$stamp" >stamp
		fi
		local data
		data=$(($(stat -c '%b * %B' src.raw)))
		lrow "sparse->raw $name" "$data" qemu-img convert -t "$mode" -f vmdk -O raw mono.vmdk OUT.raw \
			-- "$imager" convert -t "$mode" -O raw mono.vmdk OUT.raw
		lrow "raw->mono $name" "$data" qemu-img convert -t "$mode" -f raw -O vmdk -o subformat=monolithicSparse src.raw OUT.vmdk \
			-- "$imager" convert -t "$mode" -f raw -O vmdk -o subformat=monolithicSparse src.raw OUT.vmdk
	)
	# A given BENCH_DIR keeps the 1 GiB points' inputs; the larger ones are
	# too large to keep lying about.
	((cont > 1 << 30 || virt > 1 << 30)) && rm -rf "$pdir"
	return 0
}

# lrow ROW DATA QEMU-CMD... -- IMAGER-CMD...: the alternating runs of one
# row; OUT in a command is its output, without its extension.
lrow() {
	local row=$1 data=$2 qcmd=() icmd=() m secs kib
	shift 2
	[[ $row =~ $rows_re ]] || return 0
	while [[ $1 != -- ]]; do qcmd+=("$1"); shift; done
	shift
	icmd=("$@")
	echo "== $row"
	record data "$row" "$data"
	for ((i = 0; i <= runs; i++)); do
		for tool in qemu imager; do
			if [[ $tool == qemu ]]; then cmd=("${qemu_img[@]}" "${qcmd[@]:1}"); else cmd=("${imager_cmd[@]}" "${icmd[@]:1}"); fi
			cmd=("${cmd[@]//OUT/out-$tool}")
			local out=${cmd[-1]} fmt=raw
			[[ $out == *.vmdk ]] && fmt=vmdk
			rm -f "$out"
			measure m "${cmd[@]}"
			# qemu-img compare reads both sides by their allocation
			# (SEEK_DATA): 16 GiB of holes cost nothing, as cmp's reads
			# of them would.
			qemu-img compare -q -f "$fmt" -F raw "$out" src.raw || die "MISMATCH: $tool's output of \"$row\" (run $i: ${cmd[*]}) differs from src.raw"
			if [[ $tool == imager && $fmt == vmdk ]]; then
				qemu-img check -q -f vmdk "$out" || die "BROKEN: $tool's output of \"$row\" (run $i) fails qemu-img check"
			fi
			rm -f "$out"
			read -r secs kib <<<"$m"
			((i == 0)) && { echo "  warm-up $tool: $secs s"; continue; }
			echo "  run $i $tool: $secs s, $((kib / 1024)) MiB"
			record run "$row" "$tool" "$secs" "$kib"
		done
	done
}

for s in "${sizes[@]}"; do point "$s" "$content_h"; done
for s in "${sizes[@]}"; do
	[[ $(numfmt --from=iec "$s") == "$(numfmt --from=iec "$content_h")" ]] && continue # the same point as (a)'s
	point "$s" "$s"
done
record note "(a) rows of one data size should take the same seconds whatever the virtual size; (b) the seconds per GiB of data should stay flat as the data grows. -t $mode for both tools."
echo
"$benchtool" table "$samples"
