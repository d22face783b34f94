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
# One go build for all the missing Kubernetes binaries: their shared
# packages compile once and the links overlap with other work.
kube=()
for b in "${want[@]}"; do
	[[ -x $dir/$b ]] && continue
	if [[ $b == etcd ]]; then
		echo "k8s-binaries: building etcd $etcd_version (cached in $dir)" >&2
		t0=$SECONDS
		(cd "$repo/hack/tools/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3)
		mv "$dir/etcd.tmp" "$dir/etcd"
		echo "k8s-binaries: etcd built in $((SECONDS - t0)) s" >&2
	else
		kube+=("$b")
	fi
done
if ((${#kube[@]})); then
	echo "k8s-binaries: building ${kube[*]} $k8s_version (cached in $dir)" >&2
	t0=$SECONDS
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	pkgs=()
	for b in "${kube[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	(cd "$repo/hack/tools/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	for b in "${kube[@]}"; do mv "$tmp/$b" "$dir/$b"; done
	rmdir "$tmp"
	echo "k8s-binaries: ${kube[*]} built in $((SECONDS - t0)) s" >&2
fi
echo "$dir"
