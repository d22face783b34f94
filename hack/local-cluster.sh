#!/usr/bin/env bash
# local-cluster.sh up|down|status|load: a real single-node Kubernetes cluster
# without Docker or a registry, for the e2e suite and `make demo`.
#
#   up      build (once, cached) etcd and the Kubernetes components from the
#           Go module proxy, install the `cluster` packages of
#           hack/packages.txt from apt when missing, start everything on
#           127.0.0.1 with its own PKI, a default StorageClass served by
#           hack/localprovisioner (local PVs: directories, or loop devices
#           for Block mode), and load the project image (make image) into
#           containerd.
#   load    rebuild and re-import the project image.
#   down    stop what `up` started and remove what it made, and only that
#           (see down() for how each thing is told apart from the host's).
#   status  what runs.
#
# Needs root. Everything lives under $VMDKPOP_CLUSTER_DIR (default
# /var/lib/vmdkpop-cluster); the kubeconfig is $VMDKPOP_CLUSTER_DIR/kubeconfig.
# Pods get addresses in $VMDKPOP_POD_SUBNET (default 10.213.0.0/24) on the
# cluster's own CNI network `vmdkpop`, bridge `vmdkpop0`: the names down()
# goes by, so another CNI setup on the host (cni0, its CNI-* chains, its
# network namespaces and shims) is never touched.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
KUBECONFIG_FILE=$D/kubeconfig
sock=$D/containerd/containerd.sock
node=$(hostname | tr '[:upper:]' '[:lower:]')
image=vmdkpop:dev
net_name=vmdkpop # the CNI network: the plugins tag their iptables rules with it
bridge=vmdkpop0
pod_subnet=${VMDKPOP_POD_SUBNET:-10.213.0.0/24}
cni_cache=/var/lib/cni/results # libcni's result cache (containerd 1.6 cannot move it)
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

install_packages() { # the `cluster` lines of hack/packages.txt (.ci/run reads it too)
	local need=() pkg proof users
	while read -r pkg proof users; do
		[[ -z $pkg || $pkg == '#'* || ,$users, != *,cluster,* ]] && continue
		case $proof in
		python3:*) /usr/bin/python3 -c "import ${proof#python3:}" 2>/dev/null ;;
		/*) [[ -e $proof ]] ;;
		*) command -v "$proof" >/dev/null ;;
		esac && continue
		[[ " ${need[*]} " == *" $pkg "* ]] || need+=("$pkg")
	done <"$repo/hack/packages.txt"
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
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  device_ownership_from_security_context = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$D/containerd/runc"
EOF
	# No portmap plugin: no pod here uses a hostPort, and its CNI-HOSTPORT-*
	# chains would be shared with every other CNI network on the host.
	cat >"$D/cni/net.d/10-$net_name.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$net_name",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_subnet"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$D/cni/ipam"}}
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
# No KUBE-FIREWALL, KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY chains: they are
# for kube-proxy (there is none), and their names are any kubelet's.
makeIPTablesUtilChains: false
EOF
}

# host_state: what `up` changes outside $D, recorded under $D/host on the
# first `up` so that down() undoes exactly that: the IPv4 forwarding switch
# (the bridge plugin turns it on) and the host directories containerd's
# shims and libcni make that did not exist before. Refuses a pod subnet
# that overlaps a route the host already has (other than the cluster's own).
host_state() {
	local h=$D/host clash
	mkdir -p "$h"
	clash=$({ ip -o route show root "$pod_subnet" && ip -o route show match "$pod_subnet"; } 2>/dev/null |
		grep -v -e '^default ' -e " dev $bridge " || true)
	[[ -z $clash ]] || die "pod subnet $pod_subnet overlaps this host's routes ($clash): set VMDKPOP_POD_SUBNET"
	if [[ ! -f $h/ip_forward ]]; then
		cat /proc/sys/net/ipv4/ip_forward >"$h/ip_forward"
	fi
	if [[ ! -f $h/created-dirs ]]; then
		local d
		for d in /run/containerd /var/lib/cni; do
			[[ -e $d ]] || echo "$d"
		done >"$h/created-dirs"
	fi
	echo 1 >/proc/sys/net/ipv4/ip_forward 2>/dev/null || log "cannot turn on net.ipv4.ip_forward: pods cannot reach beyond the host"
}

build_images() {
	log "building the images (make image)"
	make -s -C "$repo" image >/dev/null
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/pause ./hack/pause &&
		CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/fileserver ./hack/fileserver &&
		CGO_ENABLED=0 go build -trimpath -ldflags=-s -o bin/static/vcsim ./hack/vcsim &&
		go run ./hack/ociimage -o bin/pause-image.tar -t vmdkpop-pause:v1 bin/static/pause &&
		go run ./hack/ociimage -o bin/fileserver-image.tar -t vmdkpop-e2e-fileserver:v1 -entrypoint /fileserver \
			bin/static/fileserver bin/static/vcsim)
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
	host_state

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

# down: stop what `up` started and remove what it made, each thing found by
# a record or a name that is the cluster's own, never by a pattern that
# could match someone else's:
#   - its processes: by the PIDs in $D/pids;
#   - pod containers and their runc shims: through its own containerd
#     (`ctr -a $D/containerd/containerd.sock`), then any left over, found
#     through containerd's state under $D (see kill_leftover_shims);
#   - mounts under $D, deepest first; pod network namespaces are bind
#     mounts under $D/containerd/state (netns_mounts_under_state_dir);
#   - iptables: the rules the CNI plugins tagged `name: "vmdkpop" id: ...`
#     and the chains holding them, deleted one by one (iptables-restore
#     --noflush), nothing else in the tables;
#   - the veths enslaved to the bridge vmdkpop0, then the bridge;
#   - libcni's cached results for network vmdkpop (and the loopback results
#     of the same sandboxes) in /var/lib/cni/results;
#   - loop devices whose backing file is under $D (the provisioner's Block
#     volumes, the kubelet's device locks);
#   - shim sockets in /run/containerd/s that a killed shim left, by the
#     address file in its bundle under $D;
#   - $D/host: the ip_forward value before `up`, the host directories `up`
#     created (removed if empty);
#   - $D itself.
down() {
	need_root
	for name in localprovisioner kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
		stop "$name"
	done
	stop_containers
	stop containerd
	kill_leftover_shims
	detach_loops # before the mounts go: a kubelet loop's backing file is a bind mount under $D
	# Mounts under the cluster directory, deepest first (the pods' network
	# namespaces among them).
	local netns
	netns=$(ls "$D/containerd/state/io.containerd.grpc.v1.cri/netns" 2>/dev/null | tr '\n' ' ' || true)
	[[ -z $netns ]] || log "removing network namespaces $netns"
	{ grep -o " $D/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	clean_iptables iptables
	clean_iptables ip6tables
	if ip link show "$bridge" >/dev/null 2>&1; then
		for l in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link delete "$l" 2>/dev/null || true
		done
		ip link delete "$bridge"
		log "removed bridge $bridge"
	fi
	clean_cni_cache
	restore_host
	rm -rf "$D"
	log "down"
}

# stop_containers: every task of the cluster's containerd, killed and
# deleted through that containerd; a shim exits with its last task.
stop_containers() {
	running containerd || return 0
	local ns id
	for ns in $(ctr -a "$sock" namespaces ls -q 2>/dev/null); do
		for id in $(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
			ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
			ctr -a "$sock" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
		done
	done
}

# kill_leftover_shims: container processes and shims that outlived the
# above (containerd was down or crashed). Containers by the init.pid
# containerd records in each bundle, $D/containerd/state/
# io.containerd.runtime.v2.task/NAMESPACE/ID/, if that process is still in
# the cgroup of container ID; shims (containerd 1.6 records no shim PID) by
# their working directory, one of those bundles, and their command line,
# which names the cluster's containerd socket.
kill_leftover_shims() {
	local tasks=$D/containerd/state/io.containerd.runtime.v2.task b pid p killed=()
	[[ -d $tasks ]] || return 0
	for b in "$tasks"/*/*/; do
		[[ -f $b/init.pid ]] || continue
		pid=$(cat "$b/init.pid")
		b=${b%/}
		if grep -q "/${b##*/}\$" "/proc/$pid/cgroup" 2>/dev/null; then
			kill -9 "$pid" 2>/dev/null && killed+=("$pid")
		fi
	done
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/cwd" 2>/dev/null) == "$tasks"/* ]] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "-address $sock " || continue
		kill -9 "${p#/proc/}" 2>/dev/null && killed+=("${p#/proc/}")
	done
	if ((${#killed[@]})); then
		log "killed leftover container processes and shims: ${killed[*]}"
		sleep 0.5
	fi
	# The sockets of shims that died without removing them, from the
	# address file of each bundle (/run/containerd/s/HASH).
	local a
	for a in "$tasks"/*/*/address; do
		[[ -f $a ]] || continue
		a=$(cat "$a")
		a=${a#unix://}
		[[ $a == /run/containerd/s/* && -S $a ]] && rm -f "$a"
	done
	return 0
}

# clean_iptables IPTABLES: delete the rules tagged with the cluster's CNI
# network (the bridge plugin's masquerade rules carry
# `-m comment --comment "name: \"vmdkpop\" id: \"SANDBOX\""`), the rules
# jumping to a chain holding such rules, and then those chains (CNI-<hash
# of network and sandbox>). One iptables-restore --noflush of -D/-F/-X
# lines: the rest of every table, someone else's CNI-* chains included, is
# left alone.
clean_iptables() {
	local ipt=$1 script
	command -v "$ipt-save" >/dev/null || return 0
	# The tag as iptables-save prints it (ENVIRON: awk -v would eat the backslashes).
	script=$("$ipt-save" 2>/dev/null | TAG="--comment \"name: \\\"$net_name\\\" id: \\\"" awk '
		BEGIN { tag = ENVIRON["TAG"] }
		/^\*/ { t = substr($0, 2); tables[++nt] = t; next }
		/^-A / { n[t]++; rule[t, n[t]] = $0; chain[t, n[t]] = $2
			if (index($0, tag) && $2 !~ /^(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING)$/) ours[t, $2] = 1 }
		END {
			for (i = 1; i <= nt; i++) {
				t = tables[i]; out = ""
				for (j = 1; j <= n[t]; j++) {
					r = rule[t, j]; c = chain[t, j]
					if ((t, c) in ours) continue
					target = ""
					if (match(r, / -[jg] [^ ]+/)) target = substr(r, RSTART + 4, RLENGTH - 4)
					if (index(r, tag) || (t, target) in ours) { sub(/^-A /, "-D ", r); out = out r "\n" }
				}
				for (k in ours) { split(k, p, SUBSEP); if (p[1] == t) { out = out "-F " p[2] "\n"; xs = xs "-X " p[2] "\n" } }
				out = out xs; xs = ""
				if (out != "") printf "*%s\n%sCOMMIT\n", t, out
			}
		}')
	[[ -n $script ]] || return 0
	log "removing $(grep -c '^-D' <<<"$script") $ipt rules and $(grep -c '^-X' <<<"$script") chains of network $net_name"
	"$ipt-restore" --noflush <<<"$script" || log "$ipt-restore failed on: $script"
}

# clean_cni_cache: libcni's cached ADD results for the cluster's network,
# $cni_cache/vmdkpop-SANDBOX-IFNAME, and the loopback results of the same
# sandboxes, cni-loopback-SANDBOX-lo.
clean_cni_cache() {
	local f id n=0
	for f in "$cni_cache/$net_name"-*; do
		[[ $f =~ ^$cni_cache/$net_name-([0-9a-f]{64})-[^-]+$ ]] || continue
		id=${BASH_REMATCH[1]}
		rm -f "$f" "$cni_cache/cni-loopback-$id-lo"
		((n++)) || true
	done
	((n == 0)) || log "removed $n cached CNI results of network $net_name"
}

# detach_loops: loop devices whose backing file is under $D, the kubelet's
# (backed by device nodes under $D/kubelet) before the provisioner's
# (backed by $D/volumes/*.img).
detach_loops() {
	local f back pass
	for pass in other volumes; do
		for f in /sys/block/loop*/loop/backing_file; do
			[[ -e $f ]] || continue
			back=$(cat "$f" 2>/dev/null) || continue
			[[ $back == "$D"/* ]] || continue
			if [[ $back == "$D/volumes/"* ]]; then [[ $pass == volumes ]] || continue; else [[ $pass == other ]] || continue; fi
			f=${f#/sys/block/}
			losetup -d "/dev/${f%%/*}" 2>/dev/null && log "detached /dev/${f%%/*} ($back)" || true
		done
	done
}

# restore_host: undo what host_state recorded.
restore_host() {
	local h=$D/host d v
	if v=$(cat "$h/ip_forward" 2>/dev/null) && [[ $v != "$(cat /proc/sys/net/ipv4/ip_forward)" ]]; then
		{ echo "$v" >/proc/sys/net/ipv4/ip_forward && log "net.ipv4.ip_forward restored to $v"; } || true
	fi
	[[ -f $h/created-dirs ]] || return 0
	while read -r d; do
		[[ -d $d ]] && find "$d" -depth -type d -empty -delete 2>/dev/null || true
	done <"$h/created-dirs"
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
	if ip link show "$bridge" >/dev/null 2>&1; then echo "bridge $bridge: present (network $net_name, pods in $pod_subnet)"; fi
	if [[ -f $KUBECONFIG_FILE ]]; then echo "KUBECONFIG=$KUBECONFIG_FILE"; fi
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
