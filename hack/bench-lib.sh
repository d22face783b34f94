# bench-lib.sh: sourced by hack/bench-convert.sh, bench-import.sh and
# bench-linear.sh: the method they share (issue 16). Every timed run is
# preceded by an untimed sync (neither tool pays for the other's dirty
# pages), timed with bash's EPOCHREALTIME around GNU time (which gives the
# peak RSS), and appended to a samples file as it finishes; the table
# (benchtool table) is computed from every run there was: medians with
# min-max, never a best-of.
#
# Needs, before sourcing: repo, and a die function.

bench_need_tools() {
	local missing=()
	for c in qemu-img qemu-io curl cmp sync; do
		command -v "$c" >/dev/null || missing+=("$c")
	done
	[[ -x /usr/bin/time ]] || missing+=(/usr/bin/time)
	((${#missing[@]} == 0)) || die "missing ${missing[*]}: run apt-get install -y qemu-utils time curl (the scripts install nothing)"
	[[ -n ${EPOCHREALTIME:-} ]] || die "bash 5 is needed (EPOCHREALTIME)"
}

# bench_settings: runs, quick, strict from the environment. Five alternating
# runs is the least a median means something with here; BENCH_QUICK=1 (a
# smoke test of the scripts) takes fewer and marks the table.
bench_settings() {
	quick=${BENCH_QUICK:-0}
	strict=${BENCH_STRICT:-0}
	if [[ $quick == 1 ]]; then
		runs=${BENCH_RUNS:-1}
		[[ $strict == 1 ]] && die "BENCH_STRICT=1 with BENCH_QUICK=1: a smoke test meets no target"
	else
		runs=${BENCH_RUNS:-5}
		((runs >= 5)) || die "BENCH_RUNS=$runs: at least 5 (BENCH_QUICK=1 for a smoke test, which is not a measurement)"
	fi
	[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$runs: want a positive integer"
	size_h=${BENCH_SIZE:-1G}
	seed=${BENCH_SEED:-1}
	rows_re=${BENCH_ROWS:-.}
}

# bench_build: imager (unless IMAGER names one: the same script on an older
# binary gives the before of a before/after) and benchtool, into bin/.
bench_build() {
	if [[ -z ${IMAGER:-} ]]; then
		# go build is incremental: a no-op when bin/imager is up to date.
		(cd "$repo" && go build -o bin/imager ./imager) || die "go build ./imager failed"
		imager=$repo/bin/imager
		imager_desc="imager $(cd "$repo" && git describe --always --dirty 2>/dev/null || echo '?')"
	else
		imager=$IMAGER
		imager_desc=${BENCH_IMAGER_DESC:-"imager $IMAGER ($(stat -c %y "$IMAGER" 2>/dev/null | cut -d. -f1))"}
	fi
	[[ -x $imager ]] || die "$imager is not executable"
	(cd "$repo" && go build -o bin/benchtool ./hack/benchtool) || die "go build ./hack/benchtool failed"
	benchtool=$repo/bin/benchtool
	# BENCH_SELFTEST=imager|qemu: that tool's every output has one byte
	# flipped after it exits (benchtool corrupt); the script must then die
	# of its verification (make bench-selftest).
	imager_cmd=("$imager")
	qemu_img=(qemu-img)
	case ${BENCH_SELFTEST:-} in
	'') ;;
	imager) imager_cmd=("$benchtool" corrupt -- "$imager") ;;
	qemu) qemu_img=("$benchtool" corrupt -- qemu-img) ;;
	*) die "BENCH_SELFTEST=$BENCH_SELFTEST: imager or qemu" ;;
	esac
}

# bench_dir NAME: cd into BENCH_DIR (kept, its inputs reused) or a fresh
# directory under /var/tmp removed at exit.
bench_dir() {
	if [[ -n ${BENCH_DIR:-} ]]; then
		mkdir -p "$BENCH_DIR"
		dir=$(cd "$BENCH_DIR" && pwd) # absolute: subshells cd elsewhere
	else
		dir=$(mktemp -d "/var/tmp/$1.XXXXXX")
		trap 'rm -rf "$dir"' EXIT
	fi
	cd "$dir"
}

# record FIELDS...: one record of the samples file ($samples).
record() {
	local IFS=$'\t'
	printf '%s\n' "$*" >>"$samples"
}

bench_header() {
	[[ $quick == 1 ]] && record quick 1
	record header "$imager_desc, $(qemu-img --version | head -n1), $(nproc) CPUs, disk $size_h (seed $seed), $runs timed runs per tool after 1 untimed warm-up each"
	record header "cache: the source is warm in the page cache; sync (untimed) before every run; outputs are fresh files (but the overwrite rows) and each is verified after its run"
}

# measure OUTVAR CMD...: sync, then CMD timed; OUTVAR gets "secs kib". A
# failing CMD kills the benchmark with its output.
measure() {
	local __out=$1 tf t0 t1
	shift
	tf=$(mktemp time.XXXXXX)
	sync
	t0=$EPOCHREALTIME
	if ! /usr/bin/time -o "$tf" -f '%M' "$@" >cmd.log 2>&1; then
		cat cmd.log >&2
		die "command failed: $*"
	fi
	t1=$EPOCHREALTIME
	printf -v "$__out" '%s %s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')" "$(tail -n1 "$tf")"
	rm -f "$tf"
}

# stats prints "median min max" of its arguments (bench-chain.sh).
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'
}

# floor_time LABEL CMD...: the median (min-max) of runs of CMD, each after
# a sync, as a floor record; CMD's output file is for the caller to remove
# (floor_rm names it).
floor_time() {
	local label=$1 m secs kib all=()
	shift
	for ((i = 0; i <= runs; i++)); do
		[[ -n ${floor_rm:-} ]] && rm -f "$floor_rm"
		measure m "$@"
		read -r secs kib <<<"$m"
		((i == 0)) || all+=("$secs")
	done
	[[ -n ${floor_rm:-} ]] && rm -f "$floor_rm"
	read -r med lo hi <<<"$(stats "${all[@]}")"
	record floor "$label" "$(printf '%.3f s (%.3f-%.3f)' "$med" "$lo" "$hi")"
}
