#!/usr/bin/env bash
# local-cluster.sh up|down|status|load: a real single-node Kubernetes cluster
# without Docker or a registry, for the e2e suite and `make demo`.
#
#   up      build (once, cached) etcd and the Kubernetes components from the
#           Go module proxy, install containerd/runc/CNI from apt when
#           missing, start everything on 127.0.0.1 with its own PKI, a
#           default StorageClass served by hack/localprovisioner (local PVs:
#           directories, or loop devices for Block mode), and load the
#           project image (make image) into containerd.
#   load    rebuild and re-import the project image.
#   down    stop what `up` started (by PID) and clean mounts, network
#           namespaces, the cni0 bridge, CNI iptables chains, loop devices.
#   status  what runs.
#
# Needs root. Everything lives under $VMDKPOP_CLUSTER_DIR (default
# /var/lib/vmdkpop-cluster); the kubeconfig is $VMDKPOP_CLUSTER_DIR/kubeconfig.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
KUBECONFIG_FILE=$D/kubeconfig
sock=$D/containerd/containerd.sock
node=$(hostname | tr '[:upper:]' '[:lower:]')
image=vmdkpop:dev
pause_image=docker.io/library/vmdkpop-pause:v1

log() { echo "local-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

need_root() { [[ $(id -u) == 0 ]] || die "needs root (it starts containerd and the kubelet, and makes loop devices): run it with sudo"; }

kctl() { "$bin/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

start() { # NAME CMD...: start in the background, log and PID under $D
	local name=$1
	shift
	"$@" >"$D/logs/$name.log" 2>&1 &
	echo $! >"$D/pids/$name"
}

running() { [[ -f $D/pids/$1 ]] && kill -0 "$(cat "$D/pids/$1")" 2>/dev/null; }

wait_for() { # SECONDS WHAT CMD...
	local t=$1 what=$2
	shift 2
	for ((i = 0; i < t * 5; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "timed out waiting for $what (logs in $D/logs)"
}

install_packages() {
	local need=()
	command -v containerd >/dev/null || need+=(containerd)
	command -v runc >/dev/null || need+=(runc)
	[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
	command -v iptables >/dev/null || need+=(iptables)
	command -v openssl >/dev/null || need+=(openssl)
	command -v losetup >/dev/null || need+=(mount)
	if ((${#need[@]})); then
		log "installing ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi
}

pki() {
	local p=$D/pki
	[[ -f $p/admin.crt ]] && return
	mkdir -p "$p"
	log "making the cluster's PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 3650 -subj "/CN=vmdkpop-local-ca" 2>/dev/null
	cat >"$p/apiserver.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage = serverAuth
EOF
	openssl req -newkey rsa:2048 -nodes -keyout "$p/apiserver.key" -out "$p/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null
	openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -out "$p/apiserver.crt" -days 3650 -extfile "$p/apiserver.cnf" -extensions ext 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout "$p/admin.key" -out "$p/admin.csr" -subj "/O=system:masters/CN=admin" 2>/dev/null
	printf 'extendedKeyUsage = clientAuth\n' >"$p/client.cnf"
	openssl x509 -req -in "$p/admin.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -out "$p/admin.crt" -days 3650 -extfile "$p/client.cnf" 2>/dev/null
	openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
	openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	local token
	token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	echo "$token,admin,admin,system:masters" >"$p/tokens.csv"
	cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
}

containerd_config() {
	mkdir -p "$D/containerd" "$D/cni/net.d"
	cat >"$D/containerd/config.toml" <<EOF
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  device_ownership_from_security_context = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
EOF
	cat >"$D/cni/net.d/10-vmdkpop.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "vmdkpop",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$D/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

kubelet_config() {
	mkdir -p "$D/kubelet" "$D/pod-logs"
	cat >"$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$sock
podLogsDir: $D/pod-logs
clusterDomain: cluster.local
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF
}

build_images() {
	log "building the images (make image)"
	make -s -C "$repo" image >/dev/null
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/pause ./hack/pause &&
		CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/fileserver ./hack/fileserver &&
		go run ./hack/ociimage -o bin/pause-image.tar -t vmdkpop-pause:v1 bin/static/pause &&
		go run ./hack/ociimage -o bin/fileserver-image.tar -t vmdkpop-e2e-fileserver:v1 bin/static/fileserver)
}

load_images() {
	for tar in vmdkpop-image pause-image fileserver-image; do
		ctr -a "$sock" -n k8s.io images import "$repo/bin/$tar.tar" >/dev/null
	done
	log "images loaded: $image, vmdkpop-pause:v1, vmdkpop-e2e-fileserver:v1"
}

up() {
	need_root
	install_packages
	bin=$("$repo/hack/k8s-binaries.sh" cluster)
	mkdir -p "$D/logs" "$D/pids" "$D/volumes"
	pki
	local p=$D/pki t0=$SECONDS
	build_images
	modprobe br_netfilter 2>/dev/null || true
	sysctl -qw net.ipv4.ip_forward=1 || true

	running etcd || start etcd "$bin/etcd" --data-dir "$D/etcd" --listen-client-urls http://127.0.0.1:23790 \
		--advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
		--initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster default=http://127.0.0.1:23800 \
		--listen-metrics-urls http://127.0.0.1:23810
	running kube-apiserver || start kube-apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:23790 \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 6443 \
		--tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
		--token-auth-file "$p/tokens.csv" --service-account-key-file "$p/sa.pub" \
		--service-account-signing-key-file "$p/sa.key" --service-account-issuer https://kubernetes.default.svc \
		--service-cluster-ip-range 10.0.0.0/24 --authorization-mode Node,RBAC --endpoint-reconciler-type none \
		--kubelet-client-certificate "$p/admin.crt" --kubelet-client-key "$p/admin.key" --allow-privileged=true
	wait_for 60 kube-apiserver kctl get --raw /readyz
	running kube-controller-manager || start kube-controller-manager "$bin/kube-controller-manager" \
		--kubeconfig "$KUBECONFIG_FILE" --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
		--service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
		--cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
		--leader-elect=false --bind-address 127.0.0.1 --use-service-account-credentials=false
	running kube-scheduler || start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" \
		--authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
		--leader-elect=false --bind-address 127.0.0.1
	containerd_config
	running containerd || start containerd containerd --config "$D/containerd/config.toml"
	wait_for 30 containerd ctr -a "$sock" version
	load_images
	kubelet_config
	running kubelet || start kubelet "$bin/kubelet" --config "$D/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
		--cert-dir "$D/kubelet/pki" --root-dir "$D/kubelet/root" --hostname-override "$node"
	wait_for 90 "node $node Ready" kctl wait --for=condition=Ready "node/$node" --timeout=1s
	running localprovisioner || start localprovisioner "$repo/bin/localprovisioner" --kubeconfig "$KUBECONFIG_FILE" \
		--dir "$D/volumes" --node "$node"
	kctl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: vmdkpop-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: vmdkpop.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
	wait_for 60 "the default service account" kctl get serviceaccount default -n default
	log "up in $((SECONDS - t0)) s: export KUBECONFIG=$KUBECONFIG_FILE"
}

build_provisioner() {
	(cd "$repo" && go build -o bin/localprovisioner ./hack/localprovisioner)
}

down() {
	need_root
	for name in localprovisioner kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
		stop "$name"
	done
	# Pods' containers and sandboxes, then containerd itself.
	if running containerd; then
		for c in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
		done
		sleep 1
	fi
	stop containerd
	pkill -f "containerd-shim-runc-v2 -namespace k8s.io" 2>/dev/null || true
	# Mounts under the cluster directory, deepest first.
	grep -o " $D/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
	ip link delete cni0 2>/dev/null || true
	# The bridge plugin's masquerade chains (CNI-*) and the rules jumping to
	# them; the rest of the nat table is restored as it was.
	if iptables-save -t nat 2>/dev/null | grep -q 'CNI-'; then
		iptables-save -t nat | grep -v -e '^:CNI-' -e '^-A CNI-' -e '-j CNI-' | iptables-restore
	fi
	for f in "$D"/volumes/*.img; do
		[[ -e $f ]] || continue
		losetup -j "$f" 2>/dev/null | cut -d: -f1 | while read -r dev; do losetup -d "$dev" || true; done
	done
	rm -rf "$D"
	log "down"
}

stop() {
	local f=$D/pids/$1
	[[ -f $f ]] || return 0
	local pid
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

status() {
	for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet localprovisioner; do
		if running "$name"; then echo "$name: running (pid $(cat "$D/pids/$name"))"; else echo "$name: stopped"; fi
	done
	[[ -f $KUBECONFIG_FILE ]] && echo "KUBECONFIG=$KUBECONFIG_FILE"
}

case ${1:-} in
up)
	build_provisioner
	up
	;;
down) down ;;
status) status ;;
load)
	need_root
	build_images
	load_images
	;;
*) die "usage: $0 up|down|status|load" ;;
esac
