#!/usr/bin/env bash
# bench-all.sh (make bench): hack/bench-convert.sh then hack/bench-import.sh
# on the same inputs, and one table of both: per row qemu-img's and imager's
# median seconds (min-max), the ratio, the target, MET or NOT MET, and both
# peak RSS. Env as bench-convert.sh; BENCH_STRICT=1 exits 1 when any
# target is not met.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench-all: $*" >&2; exit 1; }
# shellcheck source=hack/bench-lib.sh
source "$repo/hack/bench-lib.sh"
bench_need_tools
bench_settings # refuses a bad BENCH_RUNS before any work
bench_build
# One imager for both scripts: a tree edited during the run changes neither
# the binary nor the header's git describe.
export IMAGER=$imager BENCH_IMAGER_DESC=$imager_desc
bench_dir bench
t0=$SECONDS
BENCH_DIR=$dir BENCH_TABLE=0 "$repo/hack/bench-convert.sh"
BENCH_DIR=$dir BENCH_TABLE=0 "$repo/hack/bench-import.sh"
echo
strict_flag=()
[[ $strict == 1 ]] && strict_flag=(-strict)
status=0
"$repo/bin/benchtool" table "${strict_flag[@]}" "$dir/samples-convert.tsv" "$dir/samples-import.tsv" || status=1
echo "bench-all: $((SECONDS - t0)) s in all"
exit $status
