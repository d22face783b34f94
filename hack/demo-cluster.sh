#!/usr/bin/env bash
# demo-cluster.sh (make demo): the main job. Brings up the local cluster
# (hack/local-cluster.sh), deploys vmdkpop (config/default), applies the
# samples that need no network (a blank image, a delta child of it, the
# two flattened into one) and a PVC populated from the child, then shows
# the VMDKImages with their CIDs and sizes. The cluster keeps running:
# `export KUBECONFIG=/var/lib/vmdkpop-cluster/kubeconfig` to look around,
# `hack/local-cluster.sh down` to stop it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
hack/local-cluster.sh up
export KUBECONFIG=$D/kubeconfig
k() { "$(hack/k8s-binaries.sh cluster)/kubectl" "$@"; }
echo "== deploying vmdkpop"
k apply --server-side --force-conflicts -k config/local >/dev/null # config/default, on the host network
k -n vmdkpop-system rollout restart deploy/vmdkpop-controller-manager >/dev/null
k -n vmdkpop-system rollout status deploy/vmdkpop-controller-manager --timeout 180s
echo "== applying samples: blank, child, flatten"
k apply -f config/samples/storage_v1alpha1_vmdkimage_blank.yaml \
	-f config/samples/storage_v1alpha1_vmdkimage_child.yaml \
	-f config/samples/storage_v1alpha1_vmdkimage_flatten.yaml
k apply -f - <<'YAML'
# A disk for a VM, filled from the child image (the volume populator).
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: vm-disk
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 11Gi}}
  dataSourceRef: {apiGroup: storage.vmdkpop.io, kind: VMDKImage, name: base-delta}
---
# Its consumer: under WaitForFirstConsumer, population starts when a pod
# needs the PVC. This one checks the disk KubeVirt would boot from.
apiVersion: v1
kind: Pod
metadata:
  name: vm-disk-check
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 107, runAsGroup: 107, fsGroup: 107, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: check
    image: vmdkpop:dev
    command: ["/imager", "checksum", "-f", "raw", "/disk/disk.img"]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: disk, mountPath: /disk, readOnly: true}]
  volumes:
  - name: disk
    persistentVolumeClaim: {claimName: vm-disk}
YAML
echo "== waiting for the images"
for img in base base-delta base-flat; do
	k wait --for=jsonpath='{.status.phase}'=Ready "vmdkimage/$img" --timeout=300s >/dev/null
done
k wait --for=jsonpath='{.status.phase}'=Succeeded pod/vm-disk-check --timeout=300s >/dev/null
k get vmdkimages -o wide
echo
k get pvc vm-disk -o custom-columns='PVC:.metadata.name,STATUS:.status.phase,VOLUME:.spec.volumeName,POPULATOR:.metadata.annotations.storage\.vmdkpop\.io/populator-phase'
echo
echo "== the populated disk.img, as its consumer sees it"
k logs vm-disk-check
echo
echo "cluster left running: export KUBECONFIG=$KUBECONFIG; stop it with hack/local-cluster.sh down"
