#!/usr/bin/env bash
# bench-scale.sh [N] [M] (make bench-scale; needs root; not in CI): the
# controllers at scale on the local cluster (hack/local-cluster.sh). It
# deploys vmdkpop (config/local), makes N blank VMDKImages and M PVCs
# populated from them (PVC i from image i mod N), waits until every image
# is Ready and every PVC Bound, and prints one table:
#
#   seconds to all Ready / all Bound (from the first create);
#   the manager's peak RSS (VmHWM of its process, read through /proc: the
#     container's process is a host process here);
#   API requests the manager made per object, from its own client metrics
#     (rest_client_requests_total: every request it sent, by verb, counted
#     where it is made; the API server's apiserver_request_total has no
#     user or user-agent label, so it cannot tell the manager's requests
#     from the kubelet's and the controller-manager's), from just before
#     the first create to the end;
#   reconcile errors per object (controller_runtime_reconcile_errors_total);
#   PASS or FAIL against the targets: RSS < 150 MiB, errors per object < 3,
#     everything Ready/Bound before the timeout.
#
# The cluster is torn down at the end (KEEP=1 keeps it). It refuses to run
# beside a local cluster that is already up. Environment: N, M (defaults
# 200, 50, or the arguments), TIMEOUT (seconds, default 1200), SIZE (each
# image's virtual size, default 64Mi), PVC_SIZE (each populated PVC's
# request, default 256Mi), FOREIGN (default 0: that many Jobs and PVCs
# that are none of vmdkpop's, made before it starts: suspended Jobs, so
# no pods, and PVCs of a class nothing provisions; what a busy cluster
# holds besides, for the manager's cache to ignore or keep lean).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
N=${1:-${N:-200}}
M=${2:-${M:-50}}
TIMEOUT=${TIMEOUT:-1200}
SIZE=${SIZE:-64Mi}
PVC_SIZE=${PVC_SIZE:-256Mi}
FOREIGN=${FOREIGN:-0}
D=${VMDKPOP_CLUSTER_DIR:-/var/lib/vmdkpop-cluster}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
ns=bench-scale
metrics=http://127.0.0.1:18080/metrics # config/local's metrics address

log() { echo "bench-scale: $*" >&2; }
[[ $(id -u) == 0 ]] || { log "needs root (the local cluster does)"; exit 1; }
if [[ -f $D/pids/kube-apiserver ]] && kill -0 "$(cat "$D/pids/kube-apiserver")" 2>/dev/null; then
	log "a local cluster is already up in $D: not starting a second one"
	exit 1
fi
((N > 0 && M >= 0)) || { log "want N > 0 and M >= 0"; exit 1; }

[[ ${KEEP:-} == 1 ]] || trap 'hack/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
hack/local-cluster.sh up
export KUBECONFIG=$D/kubeconfig
bin=$(hack/k8s-binaries.sh cluster)
k() { "$bin/kubectl" "$@"; }
node=$(k get nodes -o jsonpath='{.items[0].metadata.name}')

if ((FOREIGN > 0)); then
	log "creating $FOREIGN Jobs and $FOREIGN PVCs that are not vmdkpop's"
	k create namespace others >/dev/null
	for ((i = 0; i < FOREIGN; i++)); do
		printf -- '---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: other-%d, namespace: others, labels: {app: other}}\n' "$i"
		printf 'spec: {suspend: true, template: {metadata: {labels: {app: other}}, spec: {restartPolicy: Never, containers: [{name: work, image: example.com/other:v1, args: [--input, /data/in, --output, /data/out, --verbose], env: [{name: MODE, value: batch}], volumeMounts: [{name: data, mountPath: /data}]}], volumes: [{name: data, emptyDir: {}}]}}}\n'
		printf -- '---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: other-%d, namespace: others, labels: {app: other}}\n' "$i"
		printf 'spec: {storageClassName: nothing-provisions-this, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n'
	done | k create -f - >/dev/null
fi

log "deploying vmdkpop"
k apply --server-side --force-conflicts -k config/local >/dev/null
k -n vmdkpop-system rollout status deploy/vmdkpop-controller-manager --timeout 180s >/dev/null
for ((i = 0; i < 60; i++)); do curl -fs "$metrics" >/dev/null && break || sleep 1; done

# The manager's process: its container's task in the cluster's containerd.
cid=$(k -n vmdkpop-system get pods -l app.kubernetes.io/name=vmdkpop -o jsonpath='{.items[0].status.containerStatuses[0].containerID}')
cid=${cid#containerd://}
pid=$(ctr -a "$D/containerd/containerd.sock" -n k8s.io tasks ls | awk -v id="$cid" '$1 == id {print $2}')
[[ -n $pid && -r /proc/$pid/status ]] || { log "cannot find the manager's process (container $cid)"; exit 1; }
log "manager: pid $pid"

# metric NAME: the sum of a counter over all its series.
metric() { curl -fs "$metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%d\n", s}'; }
# requests_by_verb: the manager's requests so far, one "METHOD COUNT" a line.
requests_by_verb() {
	curl -fs "$metrics" | awk '/^rest_client_requests_total\{/ {
		match($0, /method="[A-Z]+"/); m = substr($0, RSTART + 8, RLENGTH - 9); s[m] += $2
	} END {for (m in s) printf "%s %d\n", m, s[m]}' | sort
}

k create namespace "$ns" >/dev/null
sleep 5 # let the manager settle: what follows is what the objects cost
req0=$(metric rest_client_requests_total)
err0=$(metric controller_runtime_reconcile_errors_total)
requests_by_verb >/tmp/bench-scale-verbs0.$$

t0=$(date +%s.%N)
# since T: seconds from t0 to T; div A B: A / B to two places; lt A B: A < B.
since() { awk -v a="$1" -v b="$t0" 'BEGIN {printf "%.0f", a - b}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }
log "creating $N images and $M PVCs"
{
	for ((i = 0; i < N; i++)); do
		printf -- '---\napiVersion: storage.vmdkpop.io/v1alpha1\nkind: VMDKImage\nmetadata: {name: img-%d, namespace: %s}\nspec: {size: %s}\n' "$i" "$ns" "$SIZE"
	done
	# The scheduler would pick the node once a pod uses the PVC
	# (WaitForFirstConsumer): the bench picks it, with no consumer pods.
	for ((i = 0; i < M; i++)); do
		printf -- '---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: disk-%d, namespace: %s, annotations: {volume.kubernetes.io/selected-node: %s}}\n' "$i" "$ns" "$node"
		printf 'spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: %s}}, dataSourceRef: {apiGroup: storage.vmdkpop.io, kind: VMDKImage, name: img-%d}}\n' \
			"$PVC_SIZE" $((i % N))
	done
} | k create -f - >/dev/null

ready_at="" bound_at="" peak_sampled=0 ready=0 bound=0
deadline=$(($(date +%s) + TIMEOUT))
while (($(date +%s) < deadline)); do
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
	((rss > peak_sampled)) && peak_sampled=$rss
	ready=$(k -n "$ns" get vmdkimages -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Ready$' || true)
	bound=$(k -n "$ns" get pvc -l '!storage.vmdkpop.io/image,!storage.vmdkpop.io/populates' -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Bound$' || true)
	now=$(date +%s.%N)
	[[ -z $ready_at && $ready -ge $N ]] && ready_at=$now
	[[ -z $bound_at && $bound -ge $M ]] && bound_at=$now
	[[ -n $ready_at && -n $bound_at ]] && break
	log "$(printf '%4d s: %d/%d Ready, %d/%d Bound, manager RSS %d MiB' "$(since "$now")" "$ready" "$N" "$bound" "$M" $((rss / 1024)))"
	sleep 5
done
sleep 2 # the last status writes and cleanups land in the counters
req1=$(metric rest_client_requests_total)
err1=$(metric controller_runtime_reconcile_errors_total)
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
objects=$((N + M))
secs() { if [[ -n $1 ]]; then since "$1"; else echo timeout; fi; }
per() { div "$1" "$objects"; }
rss_mib=$((hwm / 1024))
req_per=$(per $((req1 - req0)))
err_per=$(per $((err1 - err0)))
verdict=PASS
why=()
((rss_mib < 150)) || { verdict=FAIL; why+=("peak RSS ${rss_mib} MiB >= 150"); }
lt "$err_per" 3 || { verdict=FAIL; why+=("$err_per reconcile errors per object >= 3"); }
[[ -n $ready_at ]] || { verdict=FAIL; why+=("only $ready/$N images Ready after ${TIMEOUT} s"); }
[[ -n $bound_at ]] || { verdict=FAIL; why+=("only $bound/$M PVCs Bound after ${TIMEOUT} s"); }

echo
((FOREIGN == 0)) || echo "(beside $FOREIGN Jobs and $FOREIGN PVCs that are not vmdkpop's)"
printf '%-5s %-5s %-12s %-12s %-14s %-16s %-16s %s\n' N M "all Ready s" "all Bound s" "peak RSS MiB" "requests/object" "errors/object" result
printf '%-5s %-5s %-12s %-12s %-14s %-16s %-16s %s\n' "$N" "$M" "$(secs "$ready_at")" "$(secs "$bound_at")" "$rss_mib" "$req_per" "$err_per" "$verdict"
echo
echo "manager requests by verb during the run (of $((req1 - req0)); $objects objects):"
requests_by_verb | join -a1 - /tmp/bench-scale-verbs0.$$ | awk '{printf "  %-7s %d\n", $1, $2 - ($3 ? $3 : 0)}'
rm -f /tmp/bench-scale-verbs0.$$
((${#why[@]} == 0)) || echo "FAIL: ${why[*]}"
[[ $verdict == PASS ]]
