#!/usr/bin/env bash
# demo.sh: what imager does, end to end, on a small generated disk:
# raw -> streamOptimized (the way VMware ships disks) -> a child image ->
# flattened -> raw, with info, map, check and compare along the way.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
imager=$repo/bin/imager
[[ -x $imager ]] || (cd "$repo" && go build -o bin/imager ./imager)
dir=${DEMO_DIR:-$(mktemp -d)}
cd "$dir"
run() { echo "\$ imager $*"; "$imager" "$@"; echo; }

# A 64 MiB "disk": some text, some random bytes, the rest holes.
truncate -s 64M disk.raw
seq 1 200000 | dd of=disk.raw conv=notrunc status=none
head -c 4M /dev/urandom | dd of=disk.raw bs=1M seek=32 conv=notrunc status=none

run convert -f raw -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic disk.raw shipped.vmdk
run info shipped.vmdk
run convert -O vmdk -o subformat=monolithicSparse shipped.vmdk base.vmdk
run create -b base.vmdk child.vmdk
run info --backing-chain child.vmdk
run map child.vmdk
run check child.vmdk
run flatten -o subformat=twoGbMaxExtentSparse child.vmdk flat.vmdk
run convert -p -O raw flat.vmdk out.img
run compare out.img disk.raw
ls -ls "$dir"
echo "demo files are in $dir"
