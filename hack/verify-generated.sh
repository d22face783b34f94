#!/usr/bin/env bash
# verify-generated.sh: fails when `make generate` would change api/ or
# config/ (generated files edited by hand, or markers changed without
# regenerating). Works on a dirty tree: it compares before and after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
snapshot() { find api config -type f -print0 | sort -z | xargs -0 sha256sum; }
before=$(snapshot)
make -s generate >/dev/null
after=$(snapshot)
if [[ $before != "$after" ]]; then
	echo "generated files were stale; make generate rewrote:" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi
