#!/usr/bin/env bash
# e2e.sh: runs the e2e suite (test/e2e, build tag e2e). With KUBECONFIG set
# it uses that cluster (whose nodes must have the vmdkpop:dev and
# vmdkpop-e2e-fileserver:v1 images: hack/kind.sh loads them into kind);
# without, it brings up hack/local-cluster.sh, runs the suite and tears
# the cluster down, whatever happened.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/local/go/bin"
run_suite() {
	go test -tags e2e -count=1 -timeout 40m ./test/e2e -ginkgo.v "$@"
}
if [[ -n ${KUBECONFIG:-} ]]; then
	run_suite "$@"
	exit
fi
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
trap 'hack/local-cluster.sh down' EXIT # after a failed `up` too
hack/local-cluster.sh up
export KUBECONFIG=$D/kubeconfig
KUBECTL="$(hack/k8s-binaries.sh cluster)/kubectl"
export KUBECTL E2E_CONFIG=config/local
run_suite "$@"
