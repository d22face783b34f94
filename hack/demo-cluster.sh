#!/usr/bin/env bash
# demo-cluster.sh (make demo): the main job. Brings up the local cluster
# (hack/local-cluster.sh), deploys vmdkpop (config/default), applies the
# samples that need no network (a blank image, a delta child of it, the
# two flattened into one) and a PVC populated from the child, then shows
# the VMDKImages with their CIDs and sizes. Then the disk a VMware estate
# holds: a pod plays an ESXi host's datastore (hack/fileserver: a thin vmfs
# base under a seSparse snapshot, served as /folder/... with basic auth),
# a VMDKImage imports the snapshot's chain over HTTP in place, a PVC is
# populated from it, and its consumer's checksum is printed next to the
# source's. Last, a VM's disk named as vSphere users name it: a pod runs
# VMware's simulator (hack/vcsim: a vCenter whose running VM's disk is an
# ESXi chain with snapshots s1, s2), a VMDKImage with source.vsphere
# imports that VM's disk as of s2 (trusted by thumbprint), a PVC is
# populated from it, and its consumer's checksum is printed next to the
# simulator's. The cluster keeps running:
# `export KUBECONFIG=/var/lib/vmdkpop-cluster/kubeconfig` to look around,
# `hack/local-cluster.sh down` to stop it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
hack/local-cluster.sh up
export KUBECONFIG=$D/kubeconfig
k() { "$(hack/k8s-binaries.sh cluster)/kubectl" "$@"; }
# check_pod NAME CLAIM: a pod that reads CLAIM's disk.img as KubeVirt's
# qemu (uid 107) would, and prints its sha256.
check_pod() {
	k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
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
    persistentVolumeClaim: {claimName: $2}
YAML
}
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
YAML
# Its consumer: under WaitForFirstConsumer, population starts when a pod
# needs the PVC. This one checks the disk KubeVirt would boot from.
check_pod vm-disk-check vm-disk
echo "== an ESXi datastore in a pod: vm.vmdk (vmfs, thin) + vm-flat.vmdk under vm-000001.vmdk (seSparse)"
k create secret generic esxi-credentials --from-literal=username=root --from-literal=password=vmware-demo \
	--dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: esxi-datastore
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: datastore
    image: vmdkpop-e2e-fileserver:v1
    command: ["/fileserver", "--dir", "/data", "--esxi-chain", "67108864", "--deltas", "1", "--seed", "7",
      "--datastore", "ha-datacenter/datastore1", "--credentials-dir", "/creds"]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: data, mountPath: /data}, {name: creds, mountPath: /creds, readOnly: true}]
  volumes:
  - {name: data, emptyDir: {}}
  - {name: creds, secret: {secretName: esxi-credentials}}
YAML
k wait --for=condition=Ready pod/esxi-datastore --timeout=180s >/dev/null
ip=$(k get pod esxi-datastore -o jsonpath='{.status.podIP}')
url="http://$ip:8080/folder/vm/vm-000001.vmdk?dcPath=ha-datacenter&dsName=datastore1"
echo "importing $url"
k apply -f - <<YAML
# The snapshot's chain, read in place over the datastore API (one login,
# then the session cookie). A real host is https: then drop the opt-in.
apiVersion: storage.vmdkpop.io/v1alpha1
kind: VMDKImage
metadata:
  name: esxi-vm
spec:
  source:
    http:
      url: "$url"
      secretRef: esxi-credentials
      insecureAllowCredentialsOverHTTP: true
  storage: {size: 128Mi}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: esxi-disk
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 128Mi}}
  dataSourceRef: {apiGroup: storage.vmdkpop.io, kind: VMDKImage, name: esxi-vm}
YAML
check_pod esxi-disk-check esxi-disk
echo "== a vCenter in a pod (VMware's simulator): a running VM, its disk a vmfs base under seSparse snapshots s1, s2"
k create secret generic vcenter-credentials --from-literal=username=administrator@vsphere.local \
	--from-literal=password=vmware-demo --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: vcenter
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: vcsim
    image: vmdkpop-e2e-fileserver:v1
    # It listens on the pod's IP: the URLs it hands out must name it.
    command: ["/vcsim", "--listen", "$(POD_IP):8989", "--size", "67108864", "--seed", "7", "--credentials-dir", "/creds"]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: tmp, mountPath: /tmp}, {name: creds, mountPath: /creds, readOnly: true}]
  volumes:
  - {name: tmp, emptyDir: {}}
  - {name: creds, secret: {secretName: vcenter-credentials}}
YAML
k wait --for=condition=Ready pod/vcenter --timeout=180s >/dev/null
# vcsim prints what it holds as one JSON line: the SDK URL, the
# certificate's thumbprint, the VMs, their snapshots and the sha256 of
# each disk as of each snapshot.
inv=
for _ in $(seq 60); do
	inv=$(k logs vcenter | grep -m1 '^{' || true)
	[ -n "$inv" ] && break
	sleep 1
done
[ -n "$inv" ] || { echo "vcsim printed no inventory" >&2; exit 1; }
vc() { python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$inv" "$1"; }
vc_url=$(vc 'd["url"]')
vc_thumb=$(vc 'd["thumbprintSHA256"]')
vc_vm=$(vc '[v for v in d["vms"] if v["running"]][0]["inventoryPath"]')
vc_sum=$(vc '[v for v in d["vms"] if v["running"]][0]["snapshots"][1]["disks"][0]["sha256"]')
echo "importing $vc_vm (running) as of snapshot s2 from $vc_url"
k apply -f - <<YAML
apiVersion: storage.vmdkpop.io/v1alpha1
kind: VMDKImage
metadata:
  name: vcenter-vm
spec:
  source:
    vsphere:
      url: "$vc_url"
      secretRef: vcenter-credentials
      thumbprint: "$vc_thumb"
      inventoryPath: "$vc_vm"
      diskLabel: Hard disk 1
      snapshot: s2
  storage: {size: 128Mi}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: vcenter-disk
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 128Mi}}
  dataSourceRef: {apiGroup: storage.vmdkpop.io, kind: VMDKImage, name: vcenter-vm}
YAML
check_pod vcenter-disk-check vcenter-disk
echo "== waiting for the images"
for img in base base-delta base-flat esxi-vm vcenter-vm; do
	k wait --for=jsonpath='{.status.phase}'=Ready "vmdkimage/$img" --timeout=300s >/dev/null
done
k wait --for=jsonpath='{.status.phase}'=Succeeded pod/vm-disk-check pod/esxi-disk-check pod/vcenter-disk-check --timeout=300s >/dev/null
k get vmdkimages -o wide
echo
k get pvc vm-disk esxi-disk vcenter-disk -o custom-columns='PVC:.metadata.name,STATUS:.status.phase,VOLUME:.spec.volumeName,POPULATOR:.metadata.annotations.storage\.vmdkpop\.io/populator-phase'
echo
echo "== the populated disk.img, as its consumer sees it"
k logs vm-disk-check
echo
echo "== the ESXi snapshot's chain: its content at the source, and the populated disk.img as its consumer sees it"
k logs esxi-datastore | sed -n 's/.*its content.s sha256 is \([0-9a-f]*\).*/source (vm-000001.vmdk over its base): \1/p'
k logs esxi-disk-check
echo
echo "== the vCenter VM's disk as of s2: what the simulator wrote, and the populated disk.img as its consumer sees it"
echo "source ($vc_vm, Hard disk 1, snapshot s2): $vc_sum"
k get vmdkimage vcenter-vm -o jsonpath='{.status.vsphere}{"\n"}'
k logs vcenter-disk-check
echo
echo "cluster left running: export KUBECONFIG=$KUBECONFIG; stop it with hack/local-cluster.sh down"
