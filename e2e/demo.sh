#!/usr/bin/env bash
# Ferry's main job, for real: a single-node cluster on this machine (kubelet + containerd + runc, kube-proxy,
# e2e/cluster.sh), the Helm chart running the controller in-cluster, an S3-compatible store with two versions of a
# model, and a ModelDeployment walked through its first rollout, inference through its Service, a version bump
# held at the promotion gate, the promotion, a rollback and a broken version.
#
#   sudo bash e2e/demo.sh                        build what is missing, bring up the local cluster, run the demo,
#                                                stop everything
#   sudo bash e2e/demo.sh --keep                 leave the cluster running afterwards
#   bash e2e/demo.sh --context NAME              use an existing cluster instead; it must run the images
#                                                ferry.local/{ferry,ferry-server,s3-store}:e2e (e2e/images/build.sh
#                                                and e2e/cluster.sh make them) and reach Service cluster IPs from here
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false context=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --keep) keep=true && shift ;;
  --context) context=${2:?--context needs a name} && shift 2 ;;
  *) echo "usage: $0 [--keep] [--context NAME]" >&2 && exit 2 ;;
  esac
done
ns=ferry-demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
proves() { printf '    \033[32m✓ %s\033[0m\n' "$*"; }
fail() {
  printf '    \033[31m✗ %s\033[0m\n' "$*"
  exit 1
}

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}
dir=""
if [[ -z $context ]]; then
  say "Bringing up the local cluster: control plane, a real node, the images, the chart, the S3 store"
  echo "    (the first run builds Kubernetes, containerd and Ferry from source; later runs take seconds)"
  dir=$(bash e2e/cluster.sh up | tail -n 1)
  $keep || trap 'bash e2e/cluster.sh down "$dir"' EXIT
  # shellcheck disable=SC1091
  source "$dir/env"
  sed 's/^/    /' "$dir/timings"
else
  say "Using kube context $context: installing the chart and the S3 store there"
  kubectl config use-context "$context" >/dev/null
  helm upgrade --install ferry charts/ferry --namespace ferry-system --create-namespace \
    --set image.repository=ferry.local/ferry --set image.tag=e2e \
    --set serverImage.repository=ferry.local/ferry-server --set serverImage.tag=e2e --wait --timeout 180s
  kubectl apply -f e2e/manifests/s3-store.yaml >/dev/null
  kubectl -n ferry-storage rollout status deployment/s3 --timeout=120s >/dev/null
  FERRY_S3_ENDPOINT=http://$(kubectl -n ferry-storage get service s3 -o jsonpath='{.spec.clusterIP}'):9000
fi
# e2e/cluster.sh installs curl; an existing cluster needs it here too.
command -v curl >/dev/null || fail "curl is needed for the inference requests (apt-get install curl)"
kubectl get nodes -o wide
kubectl -n ferry-system get pods -o wide
proves "a real node runs the controller from the chart (two replicas, one holds the leader Lease)"

# `kubectl ferry` is the ferry binary installed as kubectl-ferry on PATH.
cargo build --release --locked --quiet --bin ferry
plugins=$(mktemp -d)
ln -s "$CARGO_TARGET_DIR/release/ferry" "$plugins/kubectl-ferry"
export PATH="$plugins:$PATH"

kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create secret generic store-credentials --from-literal=AWS_ACCESS_KEY_ID=ferry \
  --from-literal=AWS_SECRET_ACCESS_KEY=ferry-local-secret --dry-run=client -o yaml | kubectl apply -f - >/dev/null

sha() { sha256sum "server-image/testdata/models/$1.onnx" | cut -d' ' -f1; }
apply_version() { # version store-object sha256
  kubectl apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
  namespace: $ns
spec:
  model:
    uri: s3://models/iris/$2/model.onnx
    version: "$1"
    sha256: $3
    credentialsSecretRef: {name: store-credentials}
    storage: {endpoint: "$FERRY_S3_ENDPOINT", region: us-east-1, allowHttp: true}
  replicas: 2
  rollout:
    autoPromote: false   # every new version waits for kubectl ferry promote
EOF
}
service_url() { echo "http://$(kubectl -n "$ns" get service "$1" -o jsonpath='{.spec.clusterIP}'):8080"; }
infer() { # service: prints "version label-of-row-0"
  curl -sS --fail-with-body --max-time 5 "$(service_url "$1")/v2/models/iris/infer" -H 'content-type: application/json' \
    -d '{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[3.743,-3.585,-2.544,1.618]}]}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["model_version"], "label", r["outputs"][0]["data"][0])'
}
wait_answer() { # service version
  for _ in $(seq 300); do
    [[ $(infer "$1" 2>/dev/null) == "$2 "* ]] && return
    sleep 0.1
  done
  fail "the Service $1 never answered with $2"
}
wait_reason() { # condition reason
  kubectl -n "$ns" wait md/iris --for=jsonpath="{.status.conditions[?(@.type==\"$1\")].reason}=$2" --timeout=180s \
    >/dev/null || fail "$1 never became $2: $(kubectl -n "$ns" get md iris -o jsonpath='{.status.conditions}')"
}
since() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'; }
conditions() {
  kubectl -n "$ns" get md iris -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}'
}

say "Applying iris 1.0.0 (s3://models/iris/1.0.0/model.onnx, with its SHA-256)"
started=$EPOCHREALTIME
apply_version 1.0.0 1.0.0 "$(sha logreg)"
kubectl -n "$ns" wait md/iris --for=condition=Ready --timeout=180s >/dev/null
wait_answer iris 1.0.0
echo "    apply -> Ready -> first answer through the Service: $(since "$started")"
kubectl -n "$ns" get md,pods -o wide
echo "    $(infer iris)"
proves "ferry-server downloaded the model from S3, verified its SHA-256, loaded it, warmed it up and answers"

say "Bumping to 2.0.0: a new revision loads next to 1.0.0 and waits at the promotion gate"
apply_version 2.0.0 2.0.0 "$(sha mlp)"
wait_reason Progressing WaitingForPromotion
kubectl ferry status iris -n "$ns"
# The preview Service gained its endpoints with the candidate; kube-proxy programs them within about a second.
wait_answer iris-preview 2.0.0
echo "    active  Service: $(infer iris)"
echo "    preview Service: $(infer iris-preview)"
[[ $(infer iris) == "1.0.0 "* ]] && proves "2.0.0 is ready (checked on the preview Service) but takes no traffic yet"

say "kubectl ferry promote iris"
kubectl ferry promote iris -n "$ns"
wait_answer iris 2.0.0
echo "    active Service: $(infer iris)"
proves "traffic moved to 2.0.0 in one Service switch; 1.0.0 stays warm"
for _ in $(seq 50); do # the controller reads each pod's /status every 2 s while it changes
  served=$(kubectl -n "$ns" get md iris -o jsonpath='{.status.active.servedSha256[*]}')
  [[ $served == "$(sha mlp)" ]] && break
  sleep 0.2
done
[[ $served == "$(sha mlp)" ]] || fail "the pods of 2.0.0 report SHA-256 ${served:-nothing}, not $(sha mlp)"
kubectl ferry status iris -n "$ns"
proves "each pod of 2.0.0 reports the SHA-256 it serves, and it is the pinned one"
kubectl -n "$ns" get deploy -l ferry.dev/model-deployment=iris

say "kubectl ferry rollback iris: back to 1.0.0, which is still warm"
started=$EPOCHREALTIME
kubectl ferry rollback iris -n "$ns"
wait_answer iris 1.0.0
echo "    rollback -> the Service answers 1.0.0: $(since "$started")"
proves "no pod started and no model was reloaded"

say "A broken version: 3.0.0 names the 2.0.0 object with the wrong SHA-256"
apply_version 3.0.0 2.0.0 "$(sha logreg)"
wait_reason Degraded ModelLoadFailed
conditions
echo "    active Service: $(infer iris)"
[[ $(infer iris) == "1.0.0 "* ]] && proves "3.0.0 never received traffic; the status carries ferry-server's reason"

say "kubectl ferry history iris"
kubectl ferry history iris -n "$ns"
kubectl -n "$ns" get events --field-selector involvedObject.kind=ModelDeployment \
  -o custom-columns=REASON:.reason,MESSAGE:.message

if $keep && [[ -n $dir ]]; then
  say "Left running. Use it with:  source $dir/env"
  echo "Stop with:  bash e2e/cluster.sh down $dir"
fi
