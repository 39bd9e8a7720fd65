#!/usr/bin/env bash
# ferry-server benchmark (by hand, not in CI). Everything runs on loopback with bounded durations:
#   1. throughput and latency: the same random forest served by ferry-server (ONNX export) and by MLServer 1.7
#      (the scikit-learn original), pinned to the same cores, driven by the same oha load with the same OIP JSON;
#      then ferry-server's latency at half its peak throughput;
#   2. a 1 GiB ONNX model on a local S3-compatible server (s3s-fs): ferry-server's fetch + SHA-256 against a raw
#      transfer of the same object (curl to /dev/null), and time-to-ready by phase;
#   3. ferry-server's peak RSS idle and under load, against the model size;
#   4. protocols: one-row and 1,000-row requests over REST JSON, REST with the binary tensor extension and gRPC,
#      against MLServer's REST and gRPC on the same model, and against the floor: a server on the same stack that
#      answers a fixed response without doing any work (benches/floor.rs). oha drives HTTP, ghz drives gRPC.
#
# Usage: bash server-image/benches/run.sh            (about 3 minutes once the tools are installed)
# Knobs: BENCH_SECONDS (10) per load run, BENCH_CONNECTIONS (16), BENCH_SERVER_CPUS (1), BENCH_LOAD_CPUS (0),
#        BENCH_REPEAT (3) runs of the half-peak load and of the 1 GiB transfer, BENCH_PARTS ("throughput big
#        protocols", any subset). Results: tables on stdout, $BENCH_OUT/results.json and $BENCH_OUT/protocols.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/lib/oha.bash
source e2e/lib/oha.bash

FERRY_CACHE_DIR="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}"
# Release builds go where e2e/cluster.sh puts them, so the two share one build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FERRY_CACHE_DIR/target}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
SERVER_CPUS="${BENCH_SERVER_CPUS:-1}"
LOAD_CPUS="${BENCH_LOAD_CPUS:-0}"
REPEAT="${BENCH_REPEAT:-3}"
PARTS=" ${BENCH_PARTS:-throughput big protocols} "
GHZ_VERSION=0.93.0
MLSERVER_VERSION=1.7.1
part() { [[ $PARTS == *" $1 "* ]]; }

tools="$FERRY_CACHE_DIR/tools"
venv="$FERRY_CACHE_DIR/venv"
mlserver_venv="$FERRY_CACHE_DIR/venv-mlserver"
out="${BENCH_OUT:-$(mktemp -d /tmp/ferry-bench.XXXXXX)}"
mkdir -p "$out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
say() { printf '\n==> %s\n' "$*" >&2; }
log() { printf '%s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# shellcheck source=e2e/lib/debian.bash
source e2e/lib/debian.bash

say "tools"
# python3-venv for the venvs, curl for the raw transfers.
ensure_debian_packages "server-image/benches/run.sh" python3-venv curl
bash server-image/scripts/setup-test-deps.sh >&2
oha=$(ensure_oha "$FERRY_CACHE_DIR")
# The same scikit-learn as the venv that trains the model, so the pickled forest loads unchanged; uvloop below
# 0.22 because MLServer 1.7.1's inference workers fail to start with 0.22+ (SeldonIO/MLServer#2286).
mlserver_packages="mlserver==$MLSERVER_VERSION mlserver-sklearn==$MLSERVER_VERSION scikit-learn==1.9.1 uvloop==0.21.0"
if [[ "$(cat "$mlserver_venv/.ferry-packages" 2>/dev/null)" != "$mlserver_packages" ]]; then
  python3 -m venv "$mlserver_venv"
  # shellcheck disable=SC2086 # the list is meant to split into packages
  "$mlserver_venv/bin/pip" install --quiet --disable-pip-version-check $mlserver_packages
  echo "$mlserver_packages" >"$mlserver_venv/.ferry-packages"
fi
# ghz built by `go install` reports its version as "dev", so a stamp records which one is installed.
if part protocols && [[ "$(cat "$tools/bin/.ghz-version" 2>/dev/null)" != "$GHZ_VERSION" ]]; then
  command -v go >/dev/null || { echo "ghz needs Go: apt-get install golang-go" >&2; exit 1; }
  GOBIN="$tools/bin" go install "github.com/bojand/ghz/cmd/ghz@v$GHZ_VERSION"
  echo "$GHZ_VERSION" >"$tools/bin/.ghz-version"
fi
cargo build --quiet --release --locked -p ferry-server
server="$CARGO_TARGET_DIR/release/ferry-server"
bench_binary() { # name: the executable of a bench target
  cargo bench --quiet --locked -p ferry-server --bench "$1" --no-run --message-format json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
raw_transfer=$(bench_binary raw_transfer)
floor=$(bench_binary floor)
library="$FERRY_CACHE_DIR/onnxruntime/libonnxruntime.so.1.31.1"

say "models in $out"
model_flags=()
part big && model_flags+=(--big)
part protocols && model_flags+=(--protocols)
"$venv/bin/python" server-image/benches/make_bench_models.py "$out" "${model_flags[@]}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ok() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "no answer from $1" >&2; return 1; }
    sleep 0.05
  done
}
rss_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
# oha against url with body file; extra args (e.g. -q RATE, headers); writes JSON to $out/$name.json
post_load() { # name url body [args...]
  local name=$1 url=$2 body=$3
  shift 3
  taskset -c "$LOAD_CPUS" "$oha" --no-tui --output-format json -z "${SECONDS_PER_RUN}s" -c "$CONNECTIONS" \
    -m POST -D "$body" "$@" "$url" >"$out/$name.json"
}
load() { # name url body [args...]: a JSON body
  post_load "$@" -H 'content-type: application/json'
}
# ghz against a gRPC address with a serialized ModelInferRequest, one connection per concurrent worker as oha.
grpc_load() { # name host:port request.bin
  taskset -c "$LOAD_CPUS" "$tools/bin/ghz" --insecure --proto server-image/proto/grpc_predict_v2.proto \
    --call inference.GRPCInferenceService.ModelInfer --binary-file "$3" -c "$CONNECTIONS" --connections "$CONNECTIONS" \
    -z "${SECONDS_PER_RUN}s" -O json -o "$out/$1.json" "$2"
}
rps() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"])' "$1"; }

start_ferry() { # uri version [env...]; sets ferry_pid, ferry_http, ferry_admin, ferry_grpc
  local http admin grpc
  http=$(free_port)
  admin=$(free_port)
  grpc=$(free_port)
  env FERRY_MODEL_NAME=bench FERRY_MODEL_URI="$1" FERRY_MODEL_VERSION="$2" FERRY_LISTEN_ADDRESS=127.0.0.1 \
    FERRY_HTTP_PORT="$http" FERRY_ADMIN_PORT="$admin" FERRY_GRPC_PORT="$grpc" FERRY_WORK_DIR="$out/work" \
    FERRY_TERMINATION_MESSAGE_PATH="$out/termination-log" FERRY_ONNXRUNTIME_LIBRARY="$library" FERRY_LOG=warn \
    "${@:3}" taskset -c "$SERVER_CPUS" "$server" 2>>"$out/ferry-server.log" &
  ferry_pid=$!
  pids+=("$ferry_pid")
  ferry_http="http://127.0.0.1:$http"
  ferry_admin="http://127.0.0.1:$admin"
  ferry_grpc="127.0.0.1:$grpc"
}
stop() { # pid: SIGTERM, then SIGKILL after 15 s (uvicorn can wait on idle keep-alive connections)
  kill "$1" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Each part is a top-level block (not indented: the Python heredocs must start at column 0).
start_mlserver() { # sets ml_pid, ml_url (REST inference), ml_grpc
  local mlserver_dir="$out/mlserver" ml_http ml_grpc_port
  mkdir -p "$mlserver_dir"
  cp "$out/model.joblib" "$mlserver_dir/model.joblib"
  ml_http=$(free_port)
  ml_grpc_port=$(free_port)
  cat >"$mlserver_dir/settings.json" <<JSON
{"http_port": $ml_http, "grpc_port": $ml_grpc_port, "metrics_port": $(free_port), "debug": false}
JSON
  cat >"$mlserver_dir/model-settings.json" <<JSON
{"name": "bench", "implementation": "mlserver_sklearn.SKLearnModel",
 "parameters": {"uri": "./model.joblib", "version": "1"}}
JSON
  (cd "$mlserver_dir" && exec taskset -c "$SERVER_CPUS" "$mlserver_venv/bin/mlserver" start . >>"$out/mlserver.log" 2>&1) &
  ml_pid=$!
  pids+=("$ml_pid")
  wait_ok "http://127.0.0.1:$ml_http/v2/models/bench/ready" 120
  ml_url="http://127.0.0.1:$ml_http/v2/models/bench/infer"
  ml_grpc="127.0.0.1:$ml_grpc_port"
}

if part throughput; then
say "ferry-server: random forest on CPUs $SERVER_CPUS, oha on CPUs $LOAD_CPUS, $CONNECTIONS connections"
start_ferry "file://$out/model.onnx" 1
wait_ok "$ferry_admin/v2/health/ready" 30
url="$ferry_http/v2/models/bench/infer"
curl -fsS -H 'content-type: application/json' --data @"$out/request.json" "$url" >"$out/ferry-response.json"
ferry_idle_rss=$(rss_kib "$ferry_pid" VmRSS)
load ferry-peak "$url" "$out/request.json"
ferry_load_hwm=$(rss_kib "$ferry_pid" VmHWM)
half=$(python3 -c "print(max(1, int(float('$(rps "$out/ferry-peak.json")') / 2)))")
# Open-loop at half the peak: latency counted from each request's scheduled start (no coordinated omission).
# Repeated, since one preemption of either process on this shared VM moves a 10 s run's p99; the median run is
# reported, with every run's p99 beside it.
# The server's own request-duration histogram is read before and after each run: its p99 (a bucket bound) tells
# the server's share of a p99 from the generator's stalls and bursts.
for run in $(seq "$REPEAT"); do
  curl -fsS "$ferry_admin/metrics" >"$out/ferry-half-$run.before.prom"
  load "ferry-half-$run" "$url" "$out/request.json" -q "$half" --latency-correction
  curl -fsS "$ferry_admin/metrics" >"$out/ferry-half-$run.after.prom"
done
stop "$ferry_pid"


say "MLServer $MLSERVER_VERSION: the scikit-learn original on CPUs $SERVER_CPUS"
start_mlserver
curl -fsS -H 'content-type: application/json' --data @"$out/request.json" "$ml_url" >"$out/mlserver-response.json"
load mlserver-peak "$ml_url" "$out/request.json"
stop "$ml_pid"

fi

if part big; then
say "1 GiB model: raw transfer vs fetch + SHA-256, time to ready (s3s-fs, then a plain HTTP server)"
big_bytes=$(stat -c %s "$out/big.onnx")
big_sha=$(sha256sum "$out/big.onnx" | cut -d' ' -f1)
s3_port=$(free_port)
mkdir -p "$out/s3/bench"
"$tools/bin/s3s-fs" --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key bench-secret "$out/s3" \
  >"$out/s3s-fs.log" 2>&1 &
pids+=("$!")
until curl -s -o /dev/null "http://127.0.0.1:$s3_port/"; do sleep 0.05; done
s3_auth=(--aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
# Uploaded with PutObject so s3s-fs stores the ETag instead of hashing the file on every GET.
curl -fsS -o /dev/null "${s3_auth[@]}" -T "$out/big.onnx" "http://127.0.0.1:$s3_port/bench/big.onnx"
http_port=$(free_port)
(cd "$out" && exec python3 -m http.server --bind 127.0.0.1 "$http_port" >"$out/http-server.log" 2>&1) &
pids+=("$!")
until curl -s -o /dev/null "http://127.0.0.1:$http_port/"; do sleep 0.05; done

big_model_runs() { # transport uri raw_url [curl args...] -- [ferry env...]
  local transport=$1 uri=$2 raw_url=$3 curl_args=() ferry_env=() run started ready status
  shift 3
  while (($#)) && [[ $1 != -- ]]; do curl_args+=("$1"); shift; done
  (($#)) && shift
  ferry_env=("$@")
  : >"$out/raw-$transport.txt"
  : >"$out/client-$transport.txt"
  : >"$out/client-sha256-$transport.txt"
  : >"$out/ready-$transport.jsonl"
  for run in $(seq "$REPEAT"); do
    # Every client runs on the CPUs ferry-server gets, so each competes with the store's server the same way.
    taskset -c "$SERVER_CPUS" curl -fsS -o /dev/null -w '%{time_total}\n' "${curl_args[@]}" "$raw_url" \
      >>"$out/raw-$transport.txt"
    # The same GET with ferry-server's own object_store client, discarding the bytes, without and with SHA-256.
    env "${ferry_env[@]}" taskset -c "$SERVER_CPUS" "$raw_transfer" raw "$uri" \
      >>"$out/client-$transport.txt" 2>/dev/null
    env "${ferry_env[@]}" taskset -c "$SERVER_CPUS" "$raw_transfer" sha256 "$uri" \
      >>"$out/client-sha256-$transport.txt" 2>/dev/null
    started=$(date +%s.%N)
    start_ferry "$uri" "$run" FERRY_MODEL_SHA256="$big_sha" "${ferry_env[@]}"
    wait_ok "$ferry_admin/v2/health/ready" 300
    ready=$(date +%s.%N)
    local load_hwm idle_rss
    load_hwm=$(rss_kib "$ferry_pid" VmHWM)
    idle_rss=$(rss_kib "$ferry_pid" VmRSS)
    status=$(curl -fsS "$ferry_admin/status")
    if [[ $transport == s3 ]] && ((run == REPEAT)); then
      SECONDS_PER_RUN=5 load big-load "$ferry_http/v2/models/bench/infer" "$out/big-request.json"
    fi
    python3 - "$status" "$started" "$ready" "$load_hwm" "$idle_rss" "$(rss_kib "$ferry_pid" VmHWM)" \
      >>"$out/ready-$transport.jsonl" <<'PY'
import json, sys
status, started, ready, load_hwm, idle_rss, final_hwm = sys.argv[1:]
timings = json.loads(status)["load"]["timings"]
print(json.dumps({"start_to_ready": float(ready) - float(started), **timings,
                  "hwm_after_load_kib": int(load_hwm), "idle_rss_kib": int(idle_rss), "hwm_final_kib": int(final_hwm)}))
PY
    stop "$ferry_pid"
  done
}
big_model_runs s3 "s3://bench/big.onnx" "http://127.0.0.1:$s3_port/bench/big.onnx" "${s3_auth[@]}" -- \
  FERRY_S3_ENDPOINT="http://127.0.0.1:$s3_port" FERRY_S3_ALLOW_HTTP=true FERRY_S3_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
big_model_runs http "http://127.0.0.1:$http_port/big.onnx" "http://127.0.0.1:$http_port/big.onnx" --

fi

if part throughput && part big; then
say "results"
python3 - "$out" "$big_bytes" "$ferry_idle_rss" "$ferry_load_hwm" "$(stat -c %s "$out/model.onnx")" "$REPEAT" <<'PY'
import json, pathlib, statistics, sys
out, big_bytes, idle_rss, load_hwm, model_bytes, REPEAT = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def summary(name):
    data = json.load(open(out / f"{name}.json"))
    latency = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    return {"rps": data["summary"]["requestsPerSec"], "p50_ms": latency["p50"] * 1e3, "p99_ms": latency["p99"] * 1e3,
            "ok": codes.get("200", 0), "not_ok": sum(v for k, v in codes.items() if k != "200"),
            # oha reports the requests still open at the deadline as "aborted due to deadline"; those are not errors.
            "errors": sum(v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k)}
ferry, ml = summary("ferry-peak"), summary("mlserver-peak")
def server_p99_ms(name):
    """The upper bound of the bucket holding the 99th percentile of the server's request durations in a run."""
    def buckets(path):
        counts = {}
        for line in path.read_text().splitlines():
            if line.startswith("ferry_request_duration_seconds_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                counts[float(le)] = counts.get(float(le), 0) + float(line.rsplit(" ", 1)[1])
        return counts
    before, after = buckets(out / f"{name}.before.prom"), buckets(out / f"{name}.after.prom")
    delta = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = delta[-1][1]
    return next(le for le, count in delta if count >= 0.99 * total) * 1e3
def half_run(i):
    return {**summary(f"ferry-half-{i}"), "server_p99_ms_at_most": server_p99_ms(f"ferry-half-{i}")}
half_runs = sorted((half_run(i) for i in range(1, REPEAT + 1)), key=lambda r: r["p99_ms"])
ferry_half = {**half_runs[len(half_runs) // 2], "p99_ms_every_run": [r["p99_ms"] for r in half_runs],
              "not_ok": sum(r["not_ok"] for r in half_runs), "errors": sum(r["errors"] for r in half_runs)}
big = summary("big-load")
def transfer(transport):
    raw = [float(x) for x in (out / f"raw-{transport}.txt").read_text().split()]
    ready = [json.loads(line) for line in (out / f"ready-{transport}.jsonl").read_text().splitlines()]
    client = [float(x) for x in (out / f"client-{transport}.txt").read_text().split()]
    client_sha = [float(x) for x in (out / f"client-sha256-{transport}.txt").read_text().split()]
    fetch = [r["fetch_seconds"] + r["verify_seconds"] for r in ready]
    return {"raw_transfer_s": raw, "same_client_raw_s": client, "same_client_sha256_s": client_sha, "fetch_and_sha256_s": fetch,
            "ratio_median": statistics.median(fetch) / statistics.median(raw),
            "ratio_same_client_median": statistics.median(fetch) / statistics.median(client), "ready": ready}
transfers = {t: transfer(t) for t in ["s3", "http"]}
results = {
    "throughput": {"ferry-server": ferry, "mlserver": ml, "ratio_rps": ferry["rps"] / ml["rps"],
                   "ratio_p50": ml["p50_ms"] / ferry["p50_ms"], "ratio_p99": ml["p99_ms"] / ferry["p99_ms"]},
    "ferry_at_half_peak": ferry_half,
    "big_model": {"bytes": big_bytes, "transfers": transfers, "load_run": big},
    "rss": {"small_model_bytes": model_bytes, "idle_kib": idle_rss, "peak_under_load_kib": load_hwm},
}
(out / "results.json").write_text(json.dumps(results, indent=1))
mib = lambda kib: kib / 1024
print(f"\n| server (CPUs as given) | requests/s | p50 ms | p99 ms | non-200 |\n|---|---|---|---|---|")
for name, r in [("ferry-server (ONNX Runtime)", ferry), ("MLServer 1.7 (scikit-learn)", ml), ("ferry-server at half its peak (median run)", ferry_half)]:
    print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['not_ok'] + r['errors']} |")
t = results["throughput"]
print(f"\nferry-server at half its peak, p99 of each of {REPEAT} runs (ms): " + ", ".join(f"{v:.3f}" for v in ferry_half["p99_ms_every_run"])
      + "; the server's own p99 in those runs at most (ms): " + ", ".join(f"{r['server_p99_ms_at_most']:.1f}" for r in half_runs))
print(f"\nferry-server / MLServer: {t['ratio_rps']:.1f}x throughput, {t['ratio_p50']:.1f}x lower p50, {t['ratio_p99']:.1f}x lower p99")
print(f"\n1 GiB model ({big_bytes} bytes), median of {REPEAT} runs:")
print("| transport | curl to /dev/null s | same client, discarded s | same client + SHA-256, discarded s | ferry-server fetch: SHA-256 + file s | fetch / curl | fetch / same client |\n|---|---|---|---|---|---|---|")
for name, tr in transfers.items():
    m = lambda key: statistics.median(tr[key])
    print(f"| {name} | {m('raw_transfer_s'):.2f} | {m('same_client_raw_s'):.2f} | {m('same_client_sha256_s'):.2f} | "
          f"{m('fetch_and_sha256_s'):.2f} | {tr['ratio_median']:.2f} | {tr['ratio_same_client_median']:.2f} |")
print("\n| transport, run | start to ready s | fetch+SHA-256 s | verify s | load s | warm-up s | peak RSS by ready MiB | idle RSS MiB | peak RSS incl. load run MiB |\n|---|---|---|---|---|---|---|---|---|")
for name, tr in transfers.items():
    for i, r in enumerate(tr["ready"], 1):
        print(f"| {name} {i} | {r['start_to_ready']:.2f} | {r['fetch_seconds']:.2f} | {r['verify_seconds']:.6f} | {r['load_seconds']:.2f} | "
              f"{r['warmup_seconds']:.4f} | {mib(r['hwm_after_load_kib']):.0f} | {mib(r['idle_rss_kib']):.0f} | {mib(r['hwm_final_kib']):.0f} |")
last = transfers["s3"]["ready"][-1]
print(f"\nRSS vs model size: 1 GiB model: peak {last['hwm_final_kib'] * 1024 / big_bytes:.2f}x, idle {last['idle_rss_kib'] * 1024 / big_bytes:.2f}x "
      f"(load run: {big['rps']:.0f} requests/s, p99 {big['p99_ms']:.3f} ms); "
      f"{model_bytes / 1024:.0f} KiB forest: idle {mib(idle_rss):.1f} MiB, peak under load {mib(load_hwm):.1f} MiB")
print(f"\nraw results: {out}/results.json")
PY
fi

if part protocols; then
say "protocols: REST JSON, REST binary, gRPC; one row and 1,000 rows; ferry-server, MLServer and the floor"
start_ferry "file://$out/model.onnx" 1
wait_ok "$ferry_admin/v2/health/ready" 30
url="$ferry_http/v2/models/bench/infer"
# Every request is checked once before it is timed: a load of errors measures nothing.
curl -fsS -H 'content-type: application/json' --data @"$out/request-1.json" "$url" >"$out/floor-response.json"
for rows in 1 1000; do
  curl -fsS -o /dev/null -H 'content-type: application/json' --data-binary @"$out/request-$rows.json" "$url"
  curl -fsS -o /dev/null -H "inference-header-content-length: $(cat "$out/request-$rows.bin.header")" \
    --data-binary @"$out/request-$rows.bin" "$url"
  load "ferry-json-$rows" "$url" "$out/request-$rows.json"
  post_load "ferry-binary-$rows" "$url" "$out/request-$rows.bin" -H 'content-type: application/octet-stream' \
    -H "inference-header-content-length: $(cat "$out/request-$rows.bin.header")"
  grpc_load "ferry-grpc-$rows" "$ferry_grpc" "$out/grpc-$rows.bin"
done
stop "$ferry_pid"

floor_port=$(free_port)
taskset -c "$SERVER_CPUS" "$floor" http "$floor_port" "$out/floor-response.json" &
floor_pid=$!
pids+=("$floor_pid")
wait_ok "http://127.0.0.1:$floor_port/" 30
load floor-http "http://127.0.0.1:$floor_port/v2/models/bench/infer" "$out/request-1.json"
stop "$floor_pid"
floor_port=$(free_port)
taskset -c "$SERVER_CPUS" "$floor" grpc "$floor_port" "$out/grpc-response-1.bin" &
floor_pid=$!
pids+=("$floor_pid")
until (exec 3<>"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null; do sleep 0.05; done
grpc_load floor-grpc "127.0.0.1:$floor_port" "$out/grpc-1.bin"
stop "$floor_pid"

start_mlserver
for rows in 1 1000; do
  load "mlserver-json-$rows" "$ml_url" "$out/request-$rows.json"
  grpc_load "mlserver-grpc-$rows" "$ml_grpc" "$out/grpc-$rows.bin"
done
stop "$ml_pid"

python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def run(name):
    data = json.load(open(out / f"{name}.json"))
    if "summary" in data:  # oha
        codes = data.get("statusCodeDistribution", {})
        errors = sum(v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k)
        return {"rps": data["summary"]["requestsPerSec"], "p50_ms": data["latencyPercentiles"]["p50"] * 1e3,
                "p99_ms": data["latencyPercentiles"]["p99"] * 1e3,
                "failed": sum(v for k, v in codes.items() if k != "200") + errors}
    latency = {d["percentage"]: d["latency"] / 1e6 for d in data.get("latencyDistribution") or []}
    codes = data.get("statusCodeDistribution", {})
    return {"rps": data["rps"], "p50_ms": latency.get(50, float("nan")), "p99_ms": latency.get(99, float("nan")),
            "failed": sum(v for k, v in codes.items() if k != "OK")}
names = [f"{server}-{proto}-{rows}" for rows in (1, 1000) for server, proto in
         [("ferry", "json"), ("ferry", "binary"), ("ferry", "grpc"), ("mlserver", "json"), ("mlserver", "grpc")]]
results = {name: run(name) for name in names + ["floor-http", "floor-grpc"]}
for name, v in results.items():
    v["rows_per_s"] = v["rps"] * (1000 if name.endswith("-1000") else 1)
r = lambda name: results[name]["rps"]
rows = lambda name: results[name]["rows_per_s"]
ratios = {
    "ferry/MLServer REST, one row": r("ferry-json-1") / r("mlserver-json-1"),
    "ferry/MLServer gRPC, one row": r("ferry-grpc-1") / r("mlserver-grpc-1"),
    "ferry/MLServer REST, 1000 rows": r("ferry-json-1000") / r("mlserver-json-1000"),
    "ferry/MLServer gRPC, 1000 rows": r("ferry-grpc-1000") / r("mlserver-grpc-1000"),
    "ferry REST JSON / HTTP floor, one row": r("ferry-json-1") / r("floor-http"),
    "ferry REST binary / HTTP floor, one row": r("ferry-binary-1") / r("floor-http"),
    "ferry gRPC / gRPC floor, one row": r("ferry-grpc-1") / r("floor-grpc"),
    "binary / JSON rows/s, 1000 rows": rows("ferry-binary-1000") / rows("ferry-json-1000"),
    "gRPC / JSON rows/s, 1000 rows": rows("ferry-grpc-1000") / rows("ferry-json-1000"),
}
(out / "protocols.json").write_text(json.dumps({"runs": results, "ratios": ratios}, indent=1))
print("\n| run | requests/s | rows/s | p50 ms | p99 ms | failed |\n|---|---|---|---|---|---|")
for name, v in results.items():
    print(f"| {name} | {v['rps']:.0f} | {v['rows_per_s']:.0f} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | {v['failed']} |")
print("\n| ratio | value |\n|---|---|")
for name, v in ratios.items():
    print(f"| {name} | {v:.2f}x |")
print(f"\nraw results: {out}/protocols.json")
PY
fi
