#!/usr/bin/env bash
# kind.sh: the conventional path, for machines with Docker and kind. Creates
# a kind cluster "vmdkpop", builds the image with the Dockerfile, loads it
# and the e2e servers' image (hack/fileserver and hack/vcsim) into the
# nodes, and prints the KUBECONFIG to use:
#
#   export KUBECONFIG=$(hack/kind.sh)
#   make test-e2e                 # the same suite as on the local cluster
#   kubectl apply -k config/default
#
# kind's default StorageClass (local-path) has no Block mode, so the e2e
# spec that populates a Block PVC needs another class there. (This
# project's CI has no Docker engine; it runs hack/local-cluster.sh.)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
name=${KIND_CLUSTER:-vmdkpop}
kubeconfig=${KIND_KUBECONFIG:-$HOME/.kube/kind-$name}
for tool in docker kind go; do
	command -v "$tool" >/dev/null || { echo "kind.sh: $tool not found" >&2; exit 1; }
done
mkdir -p "$(dirname "$kubeconfig")"
if ! kind get clusters 2>/dev/null | grep -qx "$name"; then
	kind create cluster --name "$name" --kubeconfig "$kubeconfig" >&2
else
	kind get kubeconfig --name "$name" >"$kubeconfig"
fi
docker build -t vmdkpop:dev . >&2
kind load docker-image --name "$name" vmdkpop:dev >&2
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/fileserver ./hack/fileserver
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/vcsim ./hack/vcsim
go run ./hack/ociimage -o bin/fileserver-image.tar -t vmdkpop-e2e-fileserver:v1 -entrypoint /fileserver bin/static/fileserver bin/static/vcsim
kind load image-archive --name "$name" bin/fileserver-image.tar >&2
echo "$kubeconfig"
