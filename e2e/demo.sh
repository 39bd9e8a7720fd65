#!/usr/bin/env bash
# Ferry's main job on the embedded local control plane: start etcd + kube-apiserver + kube-controller-manager,
# install the CRD, run the controller, apply a ModelDeployment and walk through a gated version bump, a promotion,
# a rollback and a failed version.
#
# This control plane has no kubelet, so pods never really run: the script plays the kubelet by writing Pod status
# (ready, or terminated with ferry-server's termination message). Everything else — Deployments, ReplicaSets,
# Services, garbage collection, the controller's decisions — is real.
#
#   bash e2e/demo.sh          run the demo and stop everything afterwards
#   bash e2e/demo.sh --keep   leave the control plane and controller running
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[[ "${1:-}" == "--keep" ]] && keep=true
ns=ferry-demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
proves() { printf '    \033[32m✓ %s\033[0m\n' "$*"; }

say "Building ferry and installing the local control plane (cached after the first run)"
cargo build --quiet --bin ferry
ferry_bin="${CARGO_TARGET_DIR:-target}/debug/ferry"
bash e2e/control-plane.sh install

say "Starting etcd, kube-apiserver and kube-controller-manager on free loopback ports"
dir=$(bash e2e/control-plane.sh start | tail -n 1)
controller_pid=""
cleanup() {
  [[ -n $controller_pid ]] && kill "$controller_pid" 2>/dev/null && wait "$controller_pid" 2>/dev/null
  bash e2e/control-plane.sh stop "$dir"
}
$keep || trap cleanup EXIT
# shellcheck disable=SC1091
source "$dir/env"
# `kubectl ferry` is the ferry binary installed as kubectl-ferry on PATH.
mkdir -p "$dir/plugins" && ln -sf "$(realpath "$ferry_bin")" "$dir/plugins/kubectl-ferry"
export PATH="$dir/plugins:$PATH"

say "Installing the ModelDeployment CRD generated from the Rust types"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
proves "CRD installed and Established"

say "Running the controller: ferry run (logs in $dir/ferry.log)"
"$ferry_bin" run --metrics-address 127.0.0.1:0 >"$dir/ferry.log" 2>&1 &
controller_pid=$!

kubectl create namespace "$ns" >/dev/null

revision_of() { # revision of the Deployment serving version $1
  local version=$1
  for _ in $(seq 100); do
    local rev
    rev=$(kubectl get deploy -n "$ns" -l ferry.dev/model-deployment=iris \
      -o jsonpath="{range .items[?(@.metadata.annotations.ferry\.dev/version==\"$version\")]}{.metadata.labels.ferry\.dev/revision}{end}")
    [[ -n $rev ]] && { echo "$rev"; return; }
    sleep 0.2
  done
  echo "no Deployment for version $version" >&2
  return 1
}
stable() { kubectl get svc iris -n "$ns" -o jsonpath='{.spec.selector.ferry\.dev/revision}' 2>/dev/null; }
wait_stable() {
  for _ in $(seq 150); do [[ $(stable) == "$1" ]] && return; sleep 0.2; done
  echo "the stable Service never selected $1" >&2
  return 1
}
kubelet_ready() { # plays the kubelet: every pod of revision $1 becomes Running and Ready
  local revision=$1 now
  for _ in $(seq 100); do
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for pod in $(kubectl get pods -n "$ns" -l "ferry.dev/revision=$revision" -o name); do
      kubectl patch "$pod" -n "$ns" --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",
        \"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}],
        \"containerStatuses\":[{\"name\":\"server\",\"ready\":true,\"started\":true,\"restartCount\":0,
          \"image\":\"ferry-server:0.1.0\",\"imageID\":\"\",\"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null
    done
    local want have
    want=$(kubectl get deploy "iris-$revision" -n "$ns" -o jsonpath='{.spec.replicas}')
    have=$(kubectl get deploy "iris-$revision" -n "$ns" -o jsonpath='{.status.availableReplicas}')
    [[ "${have:-0}" -ge "$want" ]] && return
    sleep 0.2
  done
}
kubelet_fail() { # plays the kubelet for a server that could not load its model
  local revision=$1 reason=$2 message=$3 now pod
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for _ in $(seq 50); do
    pod=$(kubectl get pods -n "$ns" -l "ferry.dev/revision=$revision" -o name | head -n 1)
    [[ -n $pod ]] && break
    sleep 0.2
  done
  local termination
  termination=$(printf '{\\"reason\\":\\"%s\\",\\"message\\":\\"%s\\"}' "$reason" "$message")
  kubectl patch "$pod" -n "$ns" --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",
    \"containerStatuses\":[{\"name\":\"server\",\"ready\":false,\"restartCount\":1,\"image\":\"ferry-server:0.1.0\",\"imageID\":\"\",
      \"state\":{\"waiting\":{\"reason\":\"CrashLoopBackOff\"}},
      \"lastState\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\",\"message\":\"$termination\",\"startedAt\":\"$now\",\"finishedAt\":\"$now\"}}}]}}" >/dev/null
}
set_version() {
  kubectl patch md iris -n "$ns" --type=merge \
    -p "{\"spec\":{\"model\":{\"version\":\"$1\",\"uri\":\"https://models.example.com/iris/$1/model.onnx\"}}}" >/dev/null
}

say "Applying e2e/samples/minimal.yaml (iris 1.0.0)"
kubectl apply -n "$ns" -f e2e/samples/minimal.yaml
v1=$(revision_of 1.0.0)
echo "    revision $v1: Deployment iris-$v1 created; the stable Service selects: '$(stable)'"
proves "nothing receives traffic before the model is loaded"
kubelet_ready "$v1"
kubectl wait --for=condition=Ready md/iris -n "$ns" --timeout=60s
proves "the first version is promoted once its pods are ready"
kubectl get md -n "$ns"

say "Bumping to 1.1.0: a new revision starts next to the serving one"
set_version 1.1.0
v2=$(revision_of 1.1.0)
sleep 1
kubectl get md -n "$ns"
echo "    stable Service selects $(stable) (1.0.0); preview Service selects $(kubectl get svc iris-preview -n "$ns" -o jsonpath='{.spec.selector.ferry\.dev/revision}') (1.1.0)"
[[ $(stable) == "$v1" ]] && proves "traffic stays on 1.0.0 while 1.1.0 loads"
kubelet_ready "$v2"
wait_stable "$v2"
proves "1.1.0 is promoted in one Service write once all its replicas are ready"
kubectl ferry status iris -n "$ns"

say "kubectl ferry rollback: back to 1.0.0, which is still warm"
kubectl ferry rollback iris -n "$ns"
wait_stable "$v1"
proves "traffic is back on 1.0.0 at once, without a new Deployment or a model reload"
kubectl get deploy -n "$ns" -l ferry.dev/model-deployment=iris

say "A broken version (1.2.0) fails to load: checksum mismatch"
set_version 1.2.0
v3=$(revision_of 1.2.0)
kubelet_fail "$v3" ChecksumMismatch "expected sha256 3b0c…, got 9f86…"
for _ in $(seq 100); do
  [[ $(kubectl get md iris -n "$ns" -o jsonpath='{.status.phase}') == Degraded ]] && break
  sleep 0.2
done
kubectl get md iris -n "$ns" -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}'
[[ $(stable) == "$v1" ]] && proves "1.2.0 never received traffic; the status says exactly why"

say "kubectl ferry history iris"
kubectl ferry history iris -n "$ns"
kubectl get events -n "$ns" --field-selector involvedObject.kind=ModelDeployment -o custom-columns=REASON:.reason,MESSAGE:.message

if $keep; then
  say "Left running. Use it with:  source $dir/env"
  echo "Stop with:  kill $controller_pid; bash e2e/control-plane.sh stop $dir"
fi
