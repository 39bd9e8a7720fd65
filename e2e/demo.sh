#!/usr/bin/env bash
# Ferry's main job on the embedded local control plane: build/find the control plane, start it, install the
# CRDs, apply the sample ModelDeployments and show what the API gives a user. The controller extends this.
#   bash e2e/demo.sh          run the demo and stop everything afterwards
#   bash e2e/demo.sh --keep   leave the control plane running and print how to use it
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm; cached)"
bash e2e/control-plane.sh install

say "Starting it on free loopback ports"
dir=$(bash e2e/control-plane.sh start | tail -n 1)
if ! $keep; then
  trap 'say "Stopping the control plane"; bash e2e/control-plane.sh stop "$dir"' EXIT
fi
# shellcheck disable=SC1091
source "$dir/env"

say "Installing the ModelDeployment CRD generated from the Rust types"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s -f crds/

say "Applying the samples (minimal and full); the apiserver fills in the schema's defaults"
kubectl create namespace ferry-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n ferry-demo -f e2e/samples/
kubectl get md -n ferry-demo -o wide
kubectl get md iris -n ferry-demo -o jsonpath='{.spec.rollout}{"\n"}'

say "Admission rejects a malformed manifest and names the field"
if kubectl apply -n ferry-demo -f - <<'BAD'
apiVersion: ferry.dev/v1alpha1
kind: ModelDeployment
metadata: {name: broken}
spec:
  model: {uri: "ftp://host/model.onnx", version: "1", sha256: "ABC"}
  rollout: {keepPrevious: 42}
BAD
then
  echo "unexpected: the malformed manifest was accepted" >&2
  exit 1
fi

say "Scaling through the scale subresource"
kubectl scale md/iris -n ferry-demo --replicas=3
kubectl get md iris -n ferry-demo -o jsonpath='spec.replicas={.spec.replicas}{"\n"}'

say "Documentation from the Rust doc comments"
kubectl explain modeldeployment.spec.rollout

if $keep; then
  say "The control plane keeps running. Use it with:  source $dir/env"
  echo "Stop it with:  bash e2e/control-plane.sh stop $dir"
fi
