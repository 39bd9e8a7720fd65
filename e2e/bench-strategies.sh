#!/usr/bin/env bash
# InPlace against BlueGreen on the real node, side by side in one run (a benchmark run by hand; figures in the
# README). For each strategy: 3 replicas of a ~100 MB ONNX model (generated here: a 25M-float table the model reads
# from), a steady request load through the active Service (oha, every request recorded), then a version bump and a
# rollback under that load. Reported per strategy: requests/s and p99 during the rollout over the steady state
# before it, failed requests, the switch window (InPlace, from the pods' records, over BENCH_SWITCHES switches),
# time from bump to the Service answering the new version, rollback time, the most pods at once, and the peak memory
# of the serving pods (their cgroups' memory.peak). Needs root, like the e2e tests.
#
#   bash e2e/bench-strategies.sh            BENCH_MB (100), BENCH_CONNECTIONS (4), BENCH_SWITCHES (20),
#                                           FERRY_E2E_DIR (reuse a cluster from `bash e2e/cluster.sh up`)
#
# It installs what it needs (the cluster's pieces through e2e/cluster.sh, oha) and uses the `ferry` binary where
# e2e/cluster.sh builds it: ${CARGO_TARGET_DIR:-$FERRY_CACHE_DIR/target}/release/ferry. A failed kubectl call
# stops the run at once, with its error.
set -euo pipefail
ROOT=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
CACHE=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
FERRY=${CARGO_TARGET_DIR:-$CACHE/target}/release/ferry
MB=${BENCH_MB:-100}
CONNECTIONS=${BENCH_CONNECTIONS:-4}
SWITCHES=${BENCH_SWITCHES:-20}
PYTHON=$CACHE/venv/bin/python
MAIN_PID=$$
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# shellcheck source=e2e/lib/oha.bash
source "$ROOT/e2e/lib/oha.bash"

# On exit: everything started in the background, the models, then the cluster when this run brought it up, else
# the namespace.
PIDS=()
WORK=""
NS=""
OWN_CLUSTER=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  if [[ -n $OWN_CLUSTER ]]; then
    bash "$ROOT/e2e/cluster.sh" down "$OWN_CLUSTER" >/dev/null 2>&1 || true
  elif [[ -n $NS ]]; then
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# kubectl, stopping the whole run on an error: from the main shell and from the samplers beside it alike (a
# failed call inside $(…) or a background loop would otherwise only end that subshell).
k() {
  local out
  out=$(kubectl "$@") || {
    log "error: kubectl $* failed (its error is above); stopping"
    kill -TERM "$MAIN_PID"
    exit 1
  }
  [[ -z $out ]] || printf '%s\n' "$out"
}

OHA=$(ensure_oha "$CACHE")
if [[ -z ${FERRY_E2E_DIR:-} ]]; then
  FERRY_E2E_DIR=$(bash "$ROOT/e2e/cluster.sh" up --watch-pid $$ | tail -n1)
  OWN_CLUSTER=$FERRY_E2E_DIR
fi
[[ -f $FERRY_E2E_DIR/env ]] || die "$FERRY_E2E_DIR/env is missing: is FERRY_E2E_DIR a directory from \`bash e2e/cluster.sh up\`?"
# shellcheck source=/dev/null
source "$FERRY_E2E_DIR/env"
[[ -x $FERRY ]] || die "$FERRY is missing: e2e/cluster.sh up builds it; with a cluster from elsewhere, build it with \`cargo build --release --locked --bin ferry\` and CARGO_TARGET_DIR=${FERRY%/release/ferry}"
[[ -x $PYTHON ]] || die "$PYTHON is missing: bash server-image/scripts/setup-test-deps.sh"
WORK=$(mktemp -d /tmp/ferry-bench-strategies.XXXXXX)

log "two ${MB} MB models"
"$PYTHON" "$ROOT/e2e/lib/big_model.py" "$WORK" "$MB"
SHA1=$(sha256sum "$WORK/big-1.onnx" | cut -d' ' -f1)
SHA2=$(sha256sum "$WORK/big-2.onnx" | cut -d' ' -f1)
PORT=18123
"$PYTHON" -m http.server "$PORT" --bind "$FERRY_NODE_IP" --directory "$WORK" >"$WORK/http.log" 2>&1 &
PIDS+=("$!")
k create namespace "ferry-bench-$$" >/dev/null
NS=ferry-bench-$$
printf '{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}' >"$WORK/body.json"

apply() { # name strategy version
  local sha=$SHA1
  [[ $3 == 2 ]] && sha=$SHA2
  k apply --server-side --force-conflicts --field-manager=bench -f - >/dev/null <<EOF
apiVersion: ferry.dev/v1alpha1
kind: ModelDeployment
metadata: {name: $1, namespace: $NS}
spec:
  model: {uri: "http://$FERRY_NODE_IP:$PORT/big-$3.onnx", version: "$3", sha256: "$sha"}
  replicas: 3
  rollout: {strategy: $2, loadTimeoutSeconds: 600}
EOF
}
jsonpath() { k -n "$NS" get md "$1" -o "jsonpath=$2"; }
wait_for() { # name jsonpath value timeout
  local deadline=$((SECONDS + $4)) got
  while true; do
    got=$(jsonpath "$1" "$2") || die "reading $2 of $1 failed"
    [[ $got == "$3" ]] && return
    ((SECONDS < deadline)) || {
      log "timed out waiting for $2 == $3 (it is \"$got\")"
      kubectl -n "$NS" get md "$1" -o yaml >&2
      exit 1
    }
    sleep 0.2
  done
}
# Waits until the Service at $1 answers with model version $2, for at most $3 seconds, asking every $4 seconds.
wait_answer() {
  local deadline=$((SECONDS + $3))
  until [[ $(curl -s -m 5 -X POST -H 'content-type: application/json' -d @"$WORK/body.json" "$1" |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin).get("model_version"))' 2>/dev/null) == "$2" ]]; do
    ((SECONDS < deadline)) || die "$1 did not answer with version $2 within $3 s"
    sleep "$4"
  done
}
now_ms() { date +%s%3N; }
# The most pods of $1 at once, sampled every 200 ms, until the file $2 exists.
count_pods() {
  local most=0 n
  while [[ ! -e $2 ]]; do
    n=$(k -n "$NS" get pods -l "ferry.dev/model-deployment=$1" -o 'jsonpath={.items[*].metadata.name}' | wc -w)
    ((n > most)) && most=$n
    sleep 0.2
  done
  echo "$most"
}
# The memory high-water mark of pod $1's cgroup (cgroup v1 or v2), in bytes; nothing when it is gone.
pod_memory_peak() {
  local dir
  for dir in /sys/fs/cgroup/memory/*/kubepods/*/"pod$1" /sys/fs/cgroup/memory/kubepods/*/"pod$1" \
    /sys/fs/cgroup/*/kubepods*/*"${1//-/_}"* /sys/fs/cgroup/kubepods*/*"${1//-/_}"*; do
    [[ -r $dir/memory.max_usage_in_bytes ]] && { cat "$dir/memory.max_usage_in_bytes"; return; }
    [[ -r $dir/memory.peak ]] && { cat "$dir/memory.peak"; return; }
  done
}
# Sum over the pods of $1 of each one's highest memory high-water mark seen in $2 (lines "uid bytes"), in MB.
peak_memory_mb() {
  awk '{ if ($2 > peak[$1]) peak[$1] = $2 } END { for (p in peak) total += peak[p]; printf "%d", total / 1048576 }' "$2"
}

run() { # strategy
  local name strategy=$1
  name=$(tr '[:upper:]' '[:lower:]' <<<"$strategy")
  log "$strategy: version 1 on 3 pods"
  apply "$name" "$strategy" 1
  wait_for "$name" '{.status.active.version}/{.status.readyReplicas}' "1/3" 600
  local ip url
  ip=$(k -n "$NS" get svc "$name" -o jsonpath='{.spec.clusterIP}')
  url="http://$ip:8080/v2/models/$name/infer"
  sleep 5
  log "$strategy: steady load, then the bump and a rollback under it"
  "$OHA" -z 600s -c "$CONNECTIONS" -m POST -T application/json -D "$WORK/body.json" --no-tui \
    --db-url "$WORK/$name.db" --output-format json -o "$WORK/$name.json" "$url" &
  local oha=$! t0 t1 t2 t3 t4
  PIDS+=("$oha")
  t0=$(now_ms)
  sleep 20
  t1=$(now_ms)
  rm -f "$WORK/$name.done"
  count_pods "$name" "$WORK/$name.done" >"$WORK/$name.pods" &
  local counter=$!
  PIDS+=("$counter")
  # The memory of every pod that runs during the bump and the rollback, sampled every second.
  (while [[ ! -e $WORK/$name.done ]]; do
    for uid in $(k -n "$NS" get pods -l "ferry.dev/model-deployment=$name" -o jsonpath='{.items[*].metadata.uid}'); do
      echo "$uid $(pod_memory_peak "$uid")"
    done >>"$WORK/$name.memory"
    sleep 1
  done) &
  local sampler=$!
  PIDS+=("$sampler")
  apply "$name" "$strategy" 2
  wait_for "$name" '{.status.active.version}/{.status.readyReplicas}' "2/3" 600
  wait_answer "$url" 2 120 0.05
  t2=$(now_ms)
  sleep 10
  t3=$(now_ms)
  "$FERRY" rollback "$name" -n "$NS" >/dev/null || die "ferry rollback $name failed (its error is above)"
  wait_answer "$url" 1 60 0.02
  t4=$(now_ms)
  touch "$WORK/$name.done"
  sleep 5
  kill -INT "$oha" 2>/dev/null || true
  wait "$oha" "$counter" "$sampler" 2>/dev/null || true
  local windows=""
  if [[ $strategy == InPlace ]]; then
    log "$strategy: $SWITCHES switches between the two loaded versions"
    local i v
    for ((i = 0; i < SWITCHES; i++)); do
      v=$((i % 2 == 0 ? 2 : 1))
      apply "$name" "$strategy" "$v"
      wait_for "$name" '{.status.lastSwitch.to}/{.status.active.version}' "$v/$v" 120
      windows+="$(jsonpath "$name" '{.status.lastSwitch.windowMilliseconds}') "
    done
  fi
  "$PYTHON" - "$WORK/$name.db" "$strategy" "$t0" "$t1" "$t2" "$t3" "$t4" "$(cat "$WORK/$name.pods")" \
    "$(peak_memory_mb "$name" "$WORK/$name.memory")" "$windows" "$WORK/$name.json" <<'EOF'
import json, sqlite3, sys
db, strategy, t0, t1, t2, t3, t4, pods, memory, windows, summary = sys.argv[1:]
# Requests still in flight when oha is stopped are reported as "aborted due to deadline": not failures.
errors = sum(n for kind, n in json.load(open(summary)).get("errorDistribution", {}).items()
             if kind != "aborted due to deadline")
t0, t1, t2, t3, t4 = (int(t) / 1000 for t in (t0, t1, t2, t3, t4))
rows = sqlite3.connect(db).execute("select start, duration, status from oha").fetchall()
# oha's start is seconds since its own start; the first request went out at t0.
def window(a, b):
    picked = [(d, s) for st, d, s in rows if a <= t0 + st < b]
    ok = sorted(d for d, s in picked if 200 <= s < 300)
    failed = len(picked) - len(ok)
    p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000 if ok else float("nan")
    return len(picked) / (b - a), p99, failed
steady = window(t0 + 2, t1)
rollout = window(t1, t2)
rollback = window(t3, t4 + 0.001)
w = sorted(int(x) for x in windows.split())
switch = f"{w[len(w) // 2]} / {w[min(len(w) - 1, int(len(w) * 0.99))]} ms ({len(w)} switches)" if w else "-"
print(f"| {strategy} | {steady[0]:.0f} | {steady[1]:.1f} | {rollout[0]:.0f} ({rollout[0] / steady[0]:.2f}x) | "
      f"{rollout[1]:.1f} ({rollout[1] / steady[1]:.2f}x) | {rollout[2] + rollback[2] + errors} | {t2 - t1:.1f} s | "
      f"{(t4 - t3) * 1000:.0f} ms | {switch} | {pods} | {memory} MB |")
EOF
}

echo "| strategy | steady req/s | steady p99 ms | rollout req/s | rollout p99 ms | failed | bump -> new version | rollback | switch window p50 / p99 | most pods | peak memory |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
run BlueGreen
run InPlace
