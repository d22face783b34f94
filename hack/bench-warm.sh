#!/usr/bin/env bash
# bench-warm.sh: warm migration's figure. A simulated vCenter (hack/vcsim)
# holds a powered-off VM whose disk (BENCH_SIZE, default 1 GiB) is an
# ESXi chain: a thin vmfs base, then a seSparse delta per snapshot s1, s2
# (each rewriting about 5% of the grains, some of them zeroed). Against a
# full import of the disk at s2 into a raw disk.img, it runs the warm
# path: the disk at s1 imported raw (the PVC) and as a VMDK (the base
# image), then `import --vsphere-delta-from s1` (only the delta s1 -> s2,
# as a child of the base) and `apply-delta` of that child onto the raw
# disk, which must then have the fixture's sha256 at s2. It prints the
# bytes each step read and wrote and its time: the cut-over is the last
# two rows.
#
# Env: BENCH_DIR (default /var/tmp/bench-warm, removed at the end),
# BENCH_SIZE (bytes, default 1073741824), BENCH_SEED (default 1),
# BENCH_PORT (default 18989).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${BENCH_DIR:-/var/tmp/bench-warm}
size=${BENCH_SIZE:-1073741824}
port=${BENCH_PORT:-18989}
die() { echo "bench-warm: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 not found"
# jget FILE EXPR: EXPR (python, over the JSON object d of FILE's first
# line) printed.
jget() { python3 -c 'import json, sys; d = json.loads(open(sys.argv[1]).readline()); v = eval(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

rm -rf "$dir"
mkdir -p "$dir/creds" "$dir/raw" "$dir/full" "$dir/images/s1" "$dir/images/s2"
printf user >"$dir/creds/username"
printf pass >"$dir/creds/password"
(cd "$repo" && go build -o bin/imager ./imager && go build -o bin/vcsim ./hack/vcsim) || die "go build failed"

"$repo/bin/vcsim" --listen "127.0.0.1:$port" --size "$size" --seed "${BENCH_SEED:-1}" --credentials-dir "$dir/creds" >"$dir/vcsim.json" 2>"$dir/vcsim.log" &
vcsim=$!
trap 'kill "$vcsim" 2>/dev/null; wait "$vcsim" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1200); do
	[ -s "$dir/vcsim.json" ] && break
	kill -0 "$vcsim" 2>/dev/null || die "vcsim exited: $(cat "$dir/vcsim.log")"
	sleep 0.5
done
[ -s "$dir/vcsim.json" ] || die "vcsim did not start"
url=$(jget "$dir/vcsim.json" 'd["url"]')
thumb=$(jget "$dir/vcsim.json" 'd["thumbprintSHA256"]')
moref=$(jget "$dir/vcsim.json" 'd["vms"][0]["moref"]')
want=$(jget "$dir/vcsim.json" 'd["vms"][0]["snapshots"][1]["disks"][0]["sha256"]')
vs=(--vsphere-url "$url" --vsphere-thumbprint "$thumb" --credentials-dir "$dir/creds" --vsphere-moref "$moref" --progress-interval 0)

rows=()
# step NAME RESULT-JSON ARGS...: run imager; sets secs.
step() {
	local name=$1 res=$2
	shift 2
	local t0 t1
	t0=$(date +%s%N)
	"$repo/bin/imager" "$@" --result-file "$res" 2>>"$dir/imager.log" >/dev/null || die "$name failed: $(jget "$res" 'd.get("message")' 2>/dev/null)"
	t1=$(date +%s%N)
	secs=$(((t1 - t0) / 1000000))e-3
}
# row NAME READ WRITTEN
row() { rows+=("$1 $2 $3 $secs"); }
# held FILE: the bytes a sparse raw disk holds (its data: what an import
# of it read from the datastore and wrote).
held() { du -B1 "$1" | cut -f1; }

step full-import-s2 "$dir/r-full.json" import --target "$dir/full" "${vs[@]}" --vsphere-snapshot s2
row full-import-s2 "$(held "$dir/full/disk.img")" "$(held "$dir/full/disk.img")"
step import-s1-raw "$dir/r-raw.json" import --target "$dir/raw" "${vs[@]}" --vsphere-snapshot s1
row "import-s1-raw(warm)" "$(held "$dir/raw/disk.img")" "$(held "$dir/raw/disk.img")"
step import-s1-vmdk "$dir/r-base.json" import --target "$dir/images/s1" --target-format vmdk "${vs[@]}" --vsphere-snapshot s1
row "import-s1-vmdk(warm)" "$(held "$dir/raw/disk.img")" "$(jget "$dir/r-base.json" 'd["allocatedBytes"]')"
step delta-s1-s2 "$dir/r-delta.json" import --target "$dir/images/s2" --target-format vmdk --root "$dir/images" -b "$dir/images/s1/disk.vmdk" "${vs[@]}" --vsphere-snapshot s2 --vsphere-delta-from s1
row "delta-s1-s2(cut)" "$(jget "$dir/r-delta.json" 'd["bytesRead"]')" "$(jget "$dir/r-delta.json" 'd["allocatedBytes"]')"
cid=$(jget "$dir/r-base.json" 'd["cid"]')
step apply-delta "$dir/r-apply.json" apply-delta --root "$dir/images" --target "$dir/raw/disk.img" --expect-parent-cid "$cid" "$dir/images/s2/disk.vmdk"
row "apply-delta(cut)" 0 "$(jget "$dir/r-apply.json" 'd["bytesWritten"]')"

got=$(sha256sum "$dir/raw/disk.img" | cut -d' ' -f1)
[ "$got" = "$want" ] || die "the raw disk after apply-delta is not the disk at s2 ($got, want $want)"
full=$(sha256sum "$dir/full/disk.img" | cut -d' ' -f1)
[ "$full" = "$want" ] || die "the full import at s2 is not the disk at s2"

# read: from vSphere (a delta import's bytesRead; a full import's, the
# data the raw disk holds); written: into the target (apply-delta's
# bytesWritten, a VMDK's allocated bytes, a raw disk's data).
echo "warm migration, a $size-byte disk (vcsim, seSparse deltas); the PVC after apply-delta and the full import both have sha256 $want"
printf '%-22s %14s %14s %8s\n' step read_bytes written_bytes seconds
printf '%s\n' "${rows[@]}" | awk '
	{ printf "%-22s %14d %14d %8.2f\n", $1, $2, $3, $4 }
	$1 == "full-import-s2" { fr = $2; fw = $3; fs = $4 }
	$1 ~ /\(cut\)$/ { cr += $2; cw += $3; cs += $4 }
	END { printf "cut-over (delta + apply-delta) against a full import at s2: read %.1f%%, written %.1f%%, time %.1f%%\n", 100 * cr / fr, 100 * cw / fw, 100 * cs / fs }'
