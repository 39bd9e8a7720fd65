#!/usr/bin/env bash
# ferry-server's Python runtime benchmark (by hand, not in CI), on loopback with bounded durations:
#   1. one-row REST JSON requests/s and p99 of a scikit-learn LogisticRegression, a 100-tree RandomForestClassifier
#      and a 100-round XGBoost model served by ferry-server's Python runtime, and by MLServer 1.7.1 (mlserver-sklearn,
#      mlserver-xgboost) with the same request on the same CPUs, oha as the generator (as run.sh);
#   2. the floor: the framework's own predict on the same row in a loop, one process per server CPU
#      (python_floor.py); the same for ONNX Runtime against ferry-server serving the forest's ONNX export;
#   3. start to ready of a ~100 MB joblib pickle from a local file, ferry-server against MLServer;
#   4. the Python worker's own steps and a round trip over its pipes (python_worker_costs.py).
# The servers get BENCH_SERVER_CPUS and the generator BENCH_LOAD_CPUS; then (BENCH_WIDE_CPUS) every server, the
# floor and the generator share all CPUs, to see the Python runtime's pool use more than one core. ferry-server,
# MLServer and the floor of a model run side by side, in alternating slices (python_bench.py says why).
#
# Usage: bash server-image/benches/python.sh            (about 5 minutes once the tools are installed)
# Knobs: BENCH_SECONDS (2) per slice, BENCH_ROUNDS (4) slices of each contender, BENCH_CONNECTIONS (16),
#        BENCH_SERVER_CPUS (1), BENCH_LOAD_CPUS (0), BENCH_WIDE_CPUS (every CPU, e.g. 0-1; empty: no second
#        layout), BENCH_REPEAT (3) starts of each server for time to ready, BENCH_PARTS ("throughput ready costs",
#        any subset). Results: tables on stdout, $BENCH_OUT/python.json, and every oha slice's JSON and the servers'
#        logs beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/lib/oha.bash
source e2e/lib/oha.bash
# shellcheck source=e2e/lib/debian.bash
source e2e/lib/debian.bash

export FERRY_CACHE_DIR="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FERRY_CACHE_DIR/target}"
MLSERVER_VERSION=1.7.1
log() { printf '%s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

log "==> tools"
ensure_debian_packages "server-image/benches/python.sh" python3-venv curl
bash server-image/scripts/setup-test-deps.sh >&2
oha=$(ensure_oha "$FERRY_CACHE_DIR")
# MLServer's venv is run.sh's (venv-mlserver, with its pins: scikit-learn as the models', uvloop below 0.22) plus
# its XGBoost runtime, under a stamp of its own so the two scripts do not reinstall each other's list.
# mlserver-xgboost 1.7.1 asks for `xgboost[scikit-learn]` at any version; it gets the runtime's XGBoost, 3.2.0, as
# the CPU-only distribution `xgboost-cpu` that server-image/python/requirements.txt pins (the `xgboost` wheel, 132 MB,
# would pull nvidia-nccl-cu12, 352 MB), hence --no-deps for the runtime package alone.
mlserver_venv="$FERRY_CACHE_DIR/venv-mlserver"
mlserver_base="mlserver==$MLSERVER_VERSION mlserver-sklearn==$MLSERVER_VERSION scikit-learn==1.9.1 uvloop==0.21.0"
mlserver_base+=" xgboost-cpu==3.2.0"
mlserver_stamp="$mlserver_base mlserver-xgboost==$MLSERVER_VERSION"
if [[ "$(cat "$mlserver_venv/.ferry-python-bench" 2>/dev/null)" != "$mlserver_stamp" ]]; then
  python3 -m venv "$mlserver_venv"
  # shellcheck disable=SC2086 # the list is meant to split into packages
  "$mlserver_venv/bin/pip" install --quiet --disable-pip-version-check $mlserver_base
  "$mlserver_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "mlserver-xgboost==$MLSERVER_VERSION"
  echo "$mlserver_stamp" >"$mlserver_venv/.ferry-python-bench"
fi
cargo build --quiet --release --locked -p ferry-server

out="${BENCH_OUT:-$(mktemp -d /tmp/ferry-python-bench.XXXXXX)}"
mkdir -p "$out"
# The release directory is shared with every other build of the workspace: the runs use a copy of this one.
cp "$CARGO_TARGET_DIR/release/ferry-server" "$out/ferry-server"
log "==> models in $out"
big=()
[[ " ${BENCH_PARTS:-throughput ready costs} " == *" ready "* ]] && big=(--big)
"$FERRY_CACHE_DIR/venv-python/bin/python" server-image/benches/python_models.py "$out" "${big[@]}"
"$FERRY_CACHE_DIR/venv/bin/python" server-image/benches/python_models.py "$out" --onnx

BENCH_OUT="$out" BENCH_OHA="$oha" BENCH_FERRY_SERVER="$out/ferry-server" \
  BENCH_WIDE_CPUS="${BENCH_WIDE_CPUS-0-$(($(nproc) - 1))}" python3 server-image/benches/python_bench.py
