# bench-chain.sh: sourced by bench-import.sh. Two ESXi snapshot chains (a
# 1 GiB thin vmfs base under a seSparse delta, hack/esxichain: "seq", its
# grains stored range by range, and "scattered", stored shuffled as a
# guest writing at random leaves them, so the delta is read at scattered
# offsets; the incumbent downloads whole files, so the order is nothing
# to it), each served the
# way a datastore serves it (hack/fileserver --datastore: /folder/...,
# basic auth then the session cookie, a per-connection throttle as ESXi
# has), imported into disk.img by `imager import` with one and with four
# Range connections, against the incumbent: curl of every file of the
# chain, then qemu-img convert -O raw of the local copy. Runs alternate
# (incumbent, imager x1, imager x4), every output is a fresh directory and
# is compared with the chain's content, and each figure is the median of
# BENCH_RUNS with its min-max. Rows are chain/throttle/mode.
#
# measure and stats are hack/bench-lib.sh's (sourced by bench-import.sh):
# each run after an untimed sync.
#
# Env (besides bench-import.sh's): BENCH_THROTTLE, bytes per second per
# connection, 0 for none (default "0 128M": both rows).

chain_bench() {
	# runs: bench_settings's (hack/bench-lib.sh), as the stream rows'.
	(cd "$repo" && go build -o bin/fileserver ./hack/fileserver) || die "go build ./hack/fileserver failed"
	chain_bench_one seq "$dir/esxi"
	chain_bench_one scattered "$dir/esxi-scattered" -scattered
	rm -rf "$dir/esxi/dl" "$dir/esxi/out" "$dir/esxi-scattered/dl" "$dir/esxi-scattered/out"
	echo
	echo "ESXi chains ($BENCH_SIZE vmfs thin base + seSparse delta: seq, or scattered) over the datastore API, medians of $runs alternating runs (min-max), every output compared with the chain's content"
	printf '%-24s %-10s %8s %16s %8s %10s\n' chain/throttle/mode tool median_s min-max_s vs_incumbent peak_MiB
	printf '%s\n' "${chain_rows[@]}" | awk '
		$2 == "incumbent" { inc[$1] = $3 }
		{ printf "%-24s %-10s %8.2f %16s %7.2fx %10.1f\n", $1, $2, $3, $4 "-" $5, ($3 > 0 ? inc[$1] / $3 : 0), $6 / 1024
		  if ($2 != "incumbent" && $3 >= inc[$1]) miss = miss sprintf(" %s %s not faster;", $1, $2)
		  if ($2 == "imager-x1") x1[$1] = $3
		  if ($2 == "imager-x4" && $1 !~ /^[^\/]*\/0\// && $3 >= x1[$1]) miss = miss sprintf(" %s x4 not faster than x1;", $1)
		  if ($2 != "incumbent" && $6 / 1024 >= 256) miss = miss sprintf(" %s %s RSS %.0f MiB;", $1, $2, $6 / 1024) }
		END { print "targets (both faster than the incumbent, x4 faster than x1 when throttled, RSS < 256 MiB; both chains): " (miss == "" ? "MET" : "NOT MET:" miss) }' | tee "$dir/esxi-verdict"
	grep -q ': MET$' "$dir/esxi-verdict"
}

# chain_bench_one NAME DIR [ESXICHAIN FLAGS]: the runs of one chain, its
# rows added to chain_rows.
chain_bench_one() {
	local chain=$1 cdir=$2 fsrv port base srv
	shift 2
	if [[ ! -s $cdir/chain.sha256 ]]; then
		rm -rf "$cdir"
		mkdir -p "$cdir/ds/vm"
		(cd "$repo" && go run ./hack/esxichain -dir "$cdir/ds/vm" -size "$BENCH_SIZE" -deltas 1 -seed "${BENCH_SEED:-1}" -raw "$cdir/chain.raw" "$@") >"$cdir/chain.sha256" ||
			die "hack/esxichain $* failed"
	fi
	fsrv=$repo/bin/fileserver
	printf 'root\n' >"$cdir/username"
	printf 'bench\n' >"$cdir/password"
	local files=(vm.vmdk vm-flat.vmdk vm-000001.vmdk vm-000001-sesparse.vmdk)
	read -r -a throttles <<<"${BENCH_THROTTLE:-0 128M}"
	for throttle in "${throttles[@]}"; do
		local bps
		bps=$(numfmt --from=iec "$throttle")
		port=$((20000 + RANDOM % 20000))
		"$fsrv" --dir "$cdir/ds" --addr "127.0.0.1:$port" --datastore ha-datacenter/datastore1 \
			--credentials-dir "$cdir" --throttle "$bps" >"$cdir/server.log" 2>&1 &
		srv=$!
		for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
		base="http://127.0.0.1:$port/folder/vm"
		local q="dcPath=ha-datacenter&dsName=datastore1"
		for mode in "${cache_modes[@]}"; do
			declare -A times=() peak=()
			local tools=(incumbent imager-x1 imager-x4)
			for ((i = 0; i <= runs; i++)); do # run 0 is the warm-up
				for tool in "${tools[@]}"; do
					rm -rf "$cdir/dl" "$cdir/out"
					mkdir -p "$cdir/dl" "$cdir/out"
					case $tool in
					incumbent)
						local get=""
						for f in "${files[@]}"; do get+="curl -sSf -u root:bench -o '$cdir/dl/$f' '$base/$f?$q' && "; done
						cmd=(bash -c "$get qemu-img convert -t $mode -f vmdk -O raw '$cdir/dl/vm-000001.vmdk' '$cdir/out/disk.img'") ;;
					imager-x*)
						cmd=("$imager" import -t "$mode" --http-connections "${tool#imager-x}" --progress-interval 0
							--username-file "$cdir/username" --password-file "$cdir/password" --insecure-allow-credentials-over-http
							--target "$cdir/out" "$base/vm-000001.vmdk?$q") ;;
					esac
					measure m "${cmd[@]}"
					cmp -s "$cdir/out/disk.img" "$cdir/chain.raw" || die "MISMATCH: $tool's disk.img differs from the chain's content"
					((i == 0)) && continue
					read -r secs kib <<<"$m"
					times[$tool]+="$secs "
					((kib > ${peak[$tool]:-0})) && peak[$tool]=$kib
					echo "  $chain throttle $throttle -t $mode $tool run $i: ${secs}s, $((kib / 1024)) MiB"
				done
			done
			for tool in "${tools[@]}"; do
				chain_rows+=("$chain/$throttle/$mode $tool $(stats ${times[$tool]}) ${peak[$tool]}")
			done
			unset times peak
		done
		kill "$srv" 2>/dev/null
		wait "$srv" 2>/dev/null || true
	done
}
