#!/usr/bin/env bash
# controller-gen.sh ARGS...: runs controller-gen at the version pinned in
# hack/tools/codegen/go.mod, built from the Go module proxy into a cache
# outside the repo on first use (~1 min).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/controller-tools" { print $3 }' "$repo/hack/tools/codegen/go.mod")
bin=${VMDKPOP_CACHE:-$HOME/.cache/vmdkpop}/controller-gen-$version
if [[ ! -x $bin ]]; then
	echo "controller-gen.sh: building controller-gen $version" >&2
	mkdir -p "$(dirname "$bin")"
	(cd "$repo/hack/tools/codegen" && go build -o "$bin.tmp" sigs.k8s.io/controller-tools/cmd/controller-gen)
	mv "$bin.tmp" "$bin"
fi
exec "$bin" "$@"
