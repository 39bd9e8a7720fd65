#!/usr/bin/env bash
# A whole local Ferry installation on a real single node, for the demo and the e2e tests:
# the control plane and node of e2e/control-plane.sh, the ferry, ferry-server, pause, S3-store and curl images built
# from this tree and imported into the node's containerd, the Helm chart installed with them, and an S3-compatible
# store serving the sample models (e2e/manifests/s3-store.yaml). Needs root.
#
#   up [--watch-pid PID]   build what is missing, start everything; prints DIR as the last stdout line
#   down DIR               stop and remove everything `up` started
#
# DIR/env (sourceable) sets KUBECONFIG, PATH (kubectl, helm), FERRY_NODE_IP and FERRY_S3_ENDPOINT (the store's
# http://CLUSTER-IP:9000; access key "ferry", secret "ferry-local-secret"). DIR/timings holds the seconds each
# phase took. FERRY_E2E_TAG (default e2e) is the image tag.
set -euo pipefail
export LC_ALL=C
ROOT=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
CP=$ROOT/e2e/control-plane.sh
TAG=${FERRY_E2E_TAG:-e2e}
CACHE=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
IMAGES=$CACHE/images
CHART_NAMESPACE=ferry-system

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
now() { printf '%s' "$EPOCHREALTIME"; }
# shellcheck source=e2e/lib/debian.bash
source "$ROOT/e2e/lib/debian.bash"
# Besides the node's own: curl for the client image, python3-venv for setup-test-deps.sh's venv.
PACKAGES=(curl python3-venv python3.11 libgomp1)
phase() { # name start: records and logs how long a phase took
  local took
  took=$(awk -v s="$2" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }')
  printf '%s %s\n' "$1" "$took" >>"$TIMINGS"
  log "$1: ${took}s"
}

# The S3-compatible store (s3s-fs, installed by setup-test-deps.sh) with the sample models baked in under /data,
# so the store needs no upload step and works the same on any cluster that can run the image.
build_store_image() {
  local models=$ROOT/server-image/testdata/models
  python3 "$ROOT/e2e/images/oci_image.py" --name "ferry.local/s3-store:$TAG" --output "$IMAGES/s3-store.tar" \
    --binary "$CACHE/tools/bin/s3s-fs:/usr/bin/s3s-fs" \
    --file "$models/logreg.onnx:/data/models/iris/1.0.0/model.onnx" \
    --file "$models/mlp.onnx:/data/models/iris/2.0.0/model.onnx" \
    --entrypoint '["/usr/bin/s3s-fs"]' --expose 9000 >&2
}

# Debian's curl as a client pod (the tests call serving pods' admin port from another namespace with it).
build_client_image() {
  local curl
  curl=$(command -v curl) || die "curl is missing: apt-get install curl"
  python3 "$ROOT/e2e/images/oci_image.py" --name "ferry.local/curl:$TAG" --output "$IMAGES/curl.tar" \
    --binary "$curl:/usr/bin/curl" \
    --entrypoint '["/usr/bin/curl"]' --user 65532:65532 >&2
}

# cargo without the variables cargo sets for the programs it runs, as when started from a shell. tests/node.rs runs
# this script from inside `cargo test`, which sets CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ... ring's build script
# declares rerun-if-env-changed on several of them (briansmith/ring#2454), so with them the release build would
# rebuild ring and everything above it, and the next build from a shell all of it again (xtask/src/child.rs keeps
# the same list).
cargo_as_from_a_shell() {
  local name
  local -a unset=()
  for name in $(compgen -e); do
    case $name in
    CARGO_PKG_* | CARGO_MANIFEST_DIR | CARGO_MANIFEST_PATH | CARGO_MANIFEST_LINKS | CARGO_CRATE_NAME | CARGO_BIN_NAME | \
      CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR | OUT_DIR) unset+=(-u "$name") ;;
    esac
  done
  env "${unset[@]}" cargo "$@"
}

cmd_up() {
  local watch=() t0 t dir
  case ${1:-} in
  --watch-pid) watch=(--watch-pid "${2:?--watch-pid needs a value}") ;;
  "") ;;
  *) die "usage: $0 up [--watch-pid PID]" ;;
  esac
  [[ $EUID -eq 0 ]] || die "the local node needs root"
  TIMINGS=$(mktemp)
  t0=$(now)

  t=$(now)
  ensure_debian_packages "e2e/cluster.sh" "${PACKAGES[@]}"
  bash "$CP" install --node
  bash "$ROOT/server-image/scripts/setup-test-deps.sh" >&2
  phase install "$t"

  t=$(now)
  log "building the release binaries (no-ops when up to date)"
  # One package per command, as the two Dockerfiles build them (each gets only its own features).
  (cd "$ROOT" && export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target} &&
    cargo_as_from_a_shell build --release --locked --quiet --bin ferry &&
    cargo_as_from_a_shell build --release --locked --quiet -p ferry-server)
  bash "$ROOT/e2e/images/build.sh" --out "$IMAGES" --tag "$TAG" >&2
  build_store_image
  build_client_image
  phase images "$t"

  t=$(now)
  dir=$(bash "$CP" start --node "${watch[@]}" | tail -n 1)
  mv "$TIMINGS" "$dir/timings"
  TIMINGS=$dir/timings
  # From here on a failure must not leave the node running.
  trap 'bash "$CP" stop "$dir"' EXIT
  phase node "$t"
  # shellcheck disable=SC1091
  source "$dir/env"

  t=$(now)
  bash "$CP" load "$dir" "$IMAGES"/{ferry,ferry-server,ferry-server-python,s3-store,curl}.tar
  phase load-images "$t"

  t=$(now)
  kubectl apply -f "$ROOT/e2e/manifests/s3-store.yaml" >/dev/null
  helm install ferry "$ROOT/charts/ferry" --namespace "$CHART_NAMESPACE" --create-namespace \
    --set image.repository=ferry.local/ferry --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set serverImage.repository=ferry.local/ferry-server --set serverImage.tag="$TAG" \
    --set serverImage.pullPolicy=Never \
    --set pythonServerImage.repository=ferry.local/ferry-server-python --set pythonServerImage.tag="$TAG" \
    --set pythonServerImage.pullPolicy=Never --wait --timeout 180s >/dev/null ||
    die "helm install failed; kubectl -n $CHART_NAMESPACE get pods: $(kubectl -n "$CHART_NAMESPACE" get pods 2>&1)"
  kubectl -n ferry-storage rollout status deployment/s3 --timeout=120s >/dev/null
  phase install-chart-and-store "$t"

  local s3_ip
  s3_ip=$(kubectl -n ferry-storage get service s3 -o jsonpath='{.spec.clusterIP}')
  printf 'export FERRY_S3_ENDPOINT=%q\n' "http://$s3_ip:9000" >>"$dir/env"
  phase total "$t0"
  trap - EXIT
  log "ready: source $dir/env; stop with: bash e2e/cluster.sh down $dir"
  printf '%s\n' "$dir"
}

cmd_down() {
  [[ $# -eq 1 ]] || die "usage: $0 down DIR"
  bash "$CP" stop "$1"
}

case ${1:-} in
up) shift && cmd_up "$@" ;;
down) shift && cmd_down "$@" ;;
*)
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
  exit 2
  ;;
esac
