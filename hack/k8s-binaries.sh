#!/usr/bin/env bash
# k8s-binaries.sh [envtest|cluster]: builds the Kubernetes binaries the tests
# need from the Go module proxy (no other downloads) into a cache outside
# the repo, keyed by version, and prints that directory on stdout.
#   envtest: kube-apiserver, etcd (for KUBEBUILDER_ASSETS)
#   cluster: those plus kube-controller-manager, kube-scheduler, kubelet, kubectl
# Built binaries are reused; a cold envtest build takes ~4 min on 2 cores.
# Env: VMDKPOP_CACHE (default ~/.cache/vmdkpop).
set -euo pipefail

k8s_version=v1.37.2 # hack/tools/kube/go.mod
etcd_version=v3.7.3 # hack/tools/etcd/go.mod
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$PATH:/usr/local/go/bin"
dir=${VMDKPOP_CACHE:-$HOME/.cache/vmdkpop}/k8s-$k8s_version-etcd-$etcd_version
mkdir -p "$dir"

want=(kube-apiserver etcd)
if [[ ${1:-envtest} == cluster ]]; then
	want+=(kube-controller-manager kube-scheduler kubelet kubectl)
fi
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitTreeState=clean"
for b in "${want[@]}"; do
	[[ -x $dir/$b ]] && continue
	echo "k8s-binaries: building $b (cached in $dir)" >&2
	t0=$SECONDS
	if [[ $b == etcd ]]; then
		(cd "$repo/hack/tools/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/$b.tmp" go.etcd.io/etcd/server/v3)
	else
		(cd "$repo/hack/tools/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
	fi
	mv "$dir/$b.tmp" "$dir/$b"
	echo "k8s-binaries: $b built in $((SECONDS - t0)) s" >&2
done
echo "$dir"
