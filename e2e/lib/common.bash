# Pinned versions, cache paths and logging of e2e/control-plane.sh (sourced by it, before the other parts).
# The cache paths are part of the contract with warm caches: changing one rebuilds everything below it.
# shellcheck shell=bash disable=SC2034 # the other parts use these

# --- Pinned versions ----------------------------------------------------------------------------------------------
# The Kubernetes minor must match the k8s-openapi feature the Rust code compiles against (v1_36).
K8S_VERSION=v1.36.3
# etcd version Kubernetes 1.36 is tested with (its build/dependencies.yaml and kubeadm's DefaultEtcdVersion).
ETCD_VERSION=v3.6.8
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.1

CACHE_ROOT=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/control-plane
INSTALL_DIR=$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION
BIN_DIR=$INSTALL_DIR/bin
STAMP=$INSTALL_DIR/installed # written last: its presence means the install is complete
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl helm)
INSTALL_HINT="bash e2e/control-plane.sh install"
SERVICE_CIDR=10.0.0.0/16 # its first address, 10.0.0.1, is the kubernetes Service (in the API server's certificate)
START_TIMEOUT=${FERRY_CONTROL_PLANE_TIMEOUT:-60} # seconds each component gets to become ready
MARKER=.ferry-control-plane                       # marks a directory `stop` may delete

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'; }
