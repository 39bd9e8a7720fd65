#!/usr/bin/env python3
"""The runs of benches/python.sh (which installs the tools, builds ferry-server and makes the models first; see
there for the knobs, read here from BENCH_* variables). Standard library only.

For each layout (the servers' CPUs, the generator's CPUs) and each model, three contenders are started side by
side on the servers' CPUs: ferry-server's Python runtime (or ONNX Runtime, for the ONNX export of the forest),
MLServer 1.7.1, and the floor (python_floor.py). Then BENCH_ROUNDS rounds, each one a BENCH_SECONDS slice of
each in turn (oha for the servers, the same request), while the other two wait idle: on a shared VM whose speed
drifts by the minute, a ratio of two slices taken seconds apart holds better than one of two long runs taken a
minute apart. Every process's CPU time is read from /proc around each slice, so a table also says where a
request's time goes (ferry-server's own process against its Python workers) and how much of the run's CPUs other
jobs took. Then the time to ready of a ~100 MB pickle, and python_worker_costs.py.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ENV = os.environ
OUT = pathlib.Path(ENV["BENCH_OUT"])
CACHE = pathlib.Path(ENV["FERRY_CACHE_DIR"])
HERE = pathlib.Path(__file__).resolve().parent
SERVER = ENV["BENCH_FERRY_SERVER"]
OHA = ENV["BENCH_OHA"]
SECONDS = float(ENV.get("BENCH_SECONDS", "2"))
ROUNDS = int(ENV.get("BENCH_ROUNDS", "4"))
CONNECTIONS = ENV.get("BENCH_CONNECTIONS", "16")
REPEAT = int(ENV.get("BENCH_REPEAT", "3"))
PARTS = ENV.get("BENCH_PARTS", "throughput ready costs").split()
PYTHON = CACHE / "venv-python" / "bin" / "python"
ONNX_PYTHON = CACHE / "venv" / "bin" / "python"
MLSERVER = CACHE / "venv-mlserver" / "bin" / "mlserver"
LIBRARY = CACHE / "onnxruntime" / "libonnxruntime.so.1.31.1"
# What ferry-server gives its workers (runtime/python/mod.rs, worker_env), given to the floor too.
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
TICK = os.sysconf("SC_CLK_TCK")

SKLEARN = ("mlserver_sklearn.SKLearnModel", "model.joblib")
# name: (FERRY_MODEL_FORMAT, model file, request, (MLServer's implementation, its file name))
MODELS = {
    "sklearn LogisticRegression": ("sklearn", "logreg.joblib", "sklearn", SKLEARN),
    "sklearn RandomForest, 100 trees": ("sklearn", "forest.joblib", "sklearn", SKLEARN),
    "XGBoost, 100 rounds": ("xgboost", "xgboost.json", "xgboost", ("mlserver_xgboost.XGBoostModel", "model.json")),
    "ONNX export of the forest": ("onnx", "forest.onnx", "onnx", None),
}
processes = []
BEGAN = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - BEGAN:5.0f} s] {message}", file=sys.stderr, flush=True)


def cpus(spec):
    """A taskset list ("1", "0,1", "0-3") as a set of CPUs."""
    result = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        result.update(range(int(first), int(last or first) + 1))
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def wait_ready(url, process, timeout):
    """Polls url every 10 ms until it answers 200; the seconds it took are the caller's to measure."""
    deadline = time.monotonic() + timeout
    while get(url)[0] != 200:
        if process.poll() is not None:
            raise SystemExit(f"the server behind {url} exited with {process.returncode}; see the logs in {OUT}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no 200 from {url} within {timeout} s")
        time.sleep(0.01)


def start(command, env, cwd, log_name):
    with open(OUT / log_name, "ab") as log_file:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log_file, stderr=log_file,
                                   start_new_session=True)
    processes.append(process)
    return process


def stop(process):
    """SIGKILL to the server's process group, its workers with it: how a server ends is not measured, and both
    take seconds to end on SIGTERM (ferry-server waits 3 s for endpoints to catch up; MLServer for its workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    # A killed ferry-server leaves its work directory (a copy of the model: 106 MB for each start of the big one).
    shutil.rmtree(getattr(process, "work_dir", ""), ignore_errors=True)


def switches(pid):
    """Context switches (voluntary and not) of every thread of a process, from /proc."""
    total = 0
    for status in pathlib.Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            total += sum(int(line.split()[1]) for line in status.read_text().splitlines() if "ctxt_switches" in line)
        except OSError:
            pass
    return total


def tree_cpu(roots):
    """For each root process, the CPU seconds (user + system) and context switches of itself and of its
    descendants: {root: {"self": s, "children": s, "self_switches": n, "children_switches": n}}."""
    parents, times = {}, {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
    result = {root: {"self": times.get(root, 0.0), "children": 0.0, "self_switches": switches(root),
                     "children_switches": 0} for root in roots}
    for pid, seconds in times.items():
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor > 1:
            if ancestor in result:
                result[ancestor]["children"] += seconds
                result[ancestor]["children_switches"] += switches(pid)
                break
            ancestor = parents.get(ancestor)
    return result


def busy_seconds(cpu_set):
    """CPU seconds these CPUs spent on processes (user, nice, system) since boot, from /proc/stat; interrupts are
    left out, as they are out of the processes' own times too (the loopback network runs in softirqs)."""
    busy = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpu_set:
                busy += sum(int(fields[i]) for i in (0, 1, 2))
    return busy / TICK


class Meter:
    """Around one slice: the CPU time of the process under test (itself, its descendants), of every process this
    benchmark started, and the busy time of the layout's CPUs; what none of ours used is other jobs'."""

    def __init__(self, layout, pid):
        self.pid, self.cpus = pid, cpus(layout["server"]) | cpus(layout["load"])
        self.started, self.busy, self.trees = time.monotonic(), busy_seconds(self.cpus), self.read()

    def read(self):
        return tree_cpu([p.pid for p in processes if p.poll() is None])

    def done(self, extra_seconds=0.0):
        """The process under test's CPU seconds and context switches (itself, its descendants: "self",
        "children", "self_switches", "children_switches"), and the cores others took during the slice."""
        wall, busy, trees = time.monotonic() - self.started, busy_seconds(self.cpus) - self.busy, self.read()
        delta = lambda pid, key: trees.get(pid, {}).get(key, 0) - self.trees.get(pid, {}).get(key, 0)
        ours = sum(delta(pid, key) for pid in trees for key in ("self", "children")) + extra_seconds
        tested = {key: delta(self.pid, key) for key in ("self", "children", "self_switches", "children_switches")}
        return tested, max(0.0, busy - ours) / wall


def start_ferry(layout, format_, model):
    ports = {key: free_port() for key in ("HTTP", "ADMIN", "GRPC")}
    env = {
        "PATH": ENV["PATH"], "FERRY_MODEL_NAME": "bench", "FERRY_MODEL_URI": f"file://{OUT / model}",
        "FERRY_MODEL_VERSION": "1", "FERRY_MODEL_FORMAT": format_, "FERRY_LISTEN_ADDRESS": "127.0.0.1",
        **{f"FERRY_{key}_PORT": str(port) for key, port in ports.items()},
        "FERRY_WORK_DIR": str(work_dir := OUT / f"work-{len(processes)}"),
        "FERRY_TERMINATION_MESSAGE_PATH": str(OUT / "termination-log"),
        "FERRY_ONNXRUNTIME_LIBRARY": str(LIBRARY), "FERRY_LOG": "warn",
    }
    if format_ != "onnx":
        env.update(FERRY_PYTHON=str(PYTHON), FERRY_PYTHON_WORKERS=str(len(cpus(layout["server"]))))
    process = start(["taskset", "-c", layout["server"], SERVER], env, OUT, "ferry-server.log")
    process.work_dir = work_dir
    base, admin = f"http://127.0.0.1:{ports['HTTP']}", f"http://127.0.0.1:{ports['ADMIN']}"
    return process, f"{base}/v2/models/bench/infer", f"{admin}/v2/health/ready", admin


def start_mlserver(layout, mlserver, model, name="bench"):
    """MLServer with parallel_workers = the server's CPU count, as MLServer's docs advise for throughput."""
    implementation, file_name = mlserver
    directory = OUT / f"mlserver-{pathlib.Path(model).stem}"
    directory.mkdir(exist_ok=True)
    target = directory / file_name
    if not target.exists():
        os.link(OUT / model, target)
    http = free_port()
    settings = {"http_port": http, "grpc_port": free_port(), "metrics_port": free_port(), "debug": False,
                "parallel_workers": len(cpus(layout["server"]))}
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": implementation, "parameters": {"uri": f"./{file_name}", "version": "1"}}))
    # One thread per library, as ferry-server gives its workers: with parallel_workers processes, XGBoost's
    # OpenMP threads (one per CPU by default) would oversubscribe the CPUs.
    env = {"PATH": ENV["PATH"], "HOME": ENV.get("HOME", "/tmp"), **ONE_THREAD}
    process = start(["taskset", "-c", layout["server"], str(MLSERVER), "start", "."], env, directory, "mlserver.log")
    base = f"http://127.0.0.1:{http}/v2/models/{name}"
    return process, f"{base}/infer", f"{base}/ready"


def check(url, body, name):
    """One request before the load: a load of errors measures nothing."""
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        (OUT / f"{name}.response.json").write_bytes(response.read())


def load(name, layout, url, request, server):
    """One slice of oha, SECONDS with CONNECTIONS connections, with the CPU time of the server and of oha."""
    meter = Meter(layout, server.pid)
    command = ["taskset", "-c", layout["load"], OHA, "--no-tui", "--output-format", "json", "-z", f"{SECONDS}s",
               "-c", CONNECTIONS, "-m", "POST", "-D", str(OUT / request), "-H", "content-type: application/json", url]
    with open(OUT / f"{name}.json", "wb") as out:
        oha = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(oha.pid, 0)  # for oha's own CPU time
        oha.returncode = os.waitstatus_to_exitcode(status)
    if oha.returncode:
        raise SystemExit(f"oha failed on {url}: see {OUT / name}.json")
    oha_seconds = usage.ru_utime + usage.ru_stime
    server, others = meter.done(oha_seconds)
    data = json.loads((OUT / f"{name}.json").read_text())
    codes = data.get("statusCodeDistribution", {})
    return {
        "rps": data["summary"]["requestsPerSec"],
        "p50_ms": data["latencyPercentiles"]["p50"] * 1e3,
        "p99_ms": data["latencyPercentiles"]["p99"] * 1e3,
        "requests": sum(codes.values()),
        # oha reports the requests still open at the deadline as "aborted due to deadline"; those are not errors.
        "failed": sum(v for k, v in codes.items() if k != "200")
        + sum(v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k),
        # The server's own process, its descendants (ferry-server's Python workers, MLServer's inference workers).
        "server_cpu_s": server["self"],
        "workers_cpu_s": server["children"],
        "server_switches": server["self_switches"],
        "workers_switches": server["children_switches"],
        "generator_cores": oha_seconds / SECONDS,
        "others_cores": others,
    }


class Floor:
    """python_floor.py on the server's CPUs, loaded once, one round per call."""

    def __init__(self, layout, format_, model, request):
        python = ONNX_PYTHON if format_ == "onnx" else PYTHON
        self.layout, self.n = layout, len(cpus(layout["server"]))
        command = ["taskset", "-c", layout["server"], str(python), str(HERE / "python_floor.py"), format_,
                   str(OUT / model), str(OUT / request), str(SECONDS), str(self.n)]
        self.process = subprocess.Popen(command, env={**ENV, **ONE_THREAD}, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        processes.append(self.process)
        self.answer()

    def answer(self):
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"python_floor.py ended with {self.process.wait()}")
        return json.loads(line)

    def round(self):
        meter = Meter(self.layout, self.process.pid)
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        calls = self.answer()["calls_per_s"]
        return {"calls_per_s": calls, "us_per_call_per_process": self.n / calls * 1e6, "others_cores": meter.done()[1]}

    def close(self):
        self.process.stdin.close()
        self.process.wait(30)


def summary(slices):
    """Median requests/s and p99 of the slices; CPU per request over all of them."""
    requests = sum(s["requests"] for s in slices) or 1
    return {
        "rps": statistics.median(s["rps"] for s in slices),
        "p99_ms": statistics.median(s["p99_ms"] for s in slices),
        "failed": sum(s["failed"] for s in slices),
        "server_us_per_request": sum(s["server_cpu_s"] for s in slices) / requests * 1e6,
        "workers_us_per_request": sum(s["workers_cpu_s"] for s in slices) / requests * 1e6,
        "server_switches_per_request": sum(s["server_switches"] for s in slices) / requests,
        "workers_switches_per_request": sum(s["workers_switches"] for s in slices) / requests,
        "generator_cores": statistics.mean(s["generator_cores"] for s in slices),
        "others_cores": statistics.mean(s["others_cores"] for s in slices),
        "slices": slices,
    }


def throughput(layout):
    results = {}
    for name, (format_, model, kind, mlserver) in MODELS.items():
        request = f"{kind}-request.json"
        body = (OUT / request).read_bytes()
        tag = f"{layout['name']}-{model.replace('.', '-')}"
        log(f"==> {name}, servers on CPUs {layout['server']}, oha on CPUs {layout['load']}")
        servers = {"ferry": start_ferry(layout, format_, model)[:3]}
        if mlserver:
            servers["mlserver"] = start_mlserver(layout, mlserver, model)
        for key, (process, url, ready) in servers.items():
            wait_ready(ready, process, 180)
            check(url, body, f"{key}-{tag}")
        floor = Floor(layout, format_, model, request)
        rounds = []
        for i in range(ROUNDS):
            slices = {key: load(f"{key}-{tag}-{i}", layout, url, request, process)
                      for key, (process, url, _) in servers.items()}
            rounds.append({**slices, "floor": floor.round()})
        floor.close()
        for process, _, _ in servers.values():
            stop(process)
        entry = {key: summary([r[key] for r in rounds]) for key in servers}
        entry["floor"] = {"calls_per_s": statistics.median(r["floor"]["calls_per_s"] for r in rounds),
                          "us_per_call_per_process": statistics.median(r["floor"]["us_per_call_per_process"]
                                                                       for r in rounds),
                          "others_cores": statistics.mean(r["floor"]["others_cores"] for r in rounds),
                          "rounds": [r["floor"] for r in rounds]}
        # Ratios of slices of the same round, the median over the rounds.
        entry["ferry_over_floor"] = statistics.median(r["ferry"]["rps"] / r["floor"]["calls_per_s"] for r in rounds)
        if mlserver:
            entry["ferry_over_mlserver"] = statistics.median(r["ferry"]["rps"] / r["mlserver"]["rps"] for r in rounds)
            # The most any server could reach against MLServer: a server that cost nothing beyond the framework.
            entry["floor_over_mlserver"] = statistics.median(
                r["floor"]["calls_per_s"] / r["mlserver"]["rps"] for r in rounds)
        results[name] = entry
    return results


def time_to_ready(layout):
    """Start to ready of big.joblib, REPEAT times each: ferry-server (to /v2/health/ready, with its load phases from
    /status) and MLServer (to its model's ready endpoint)."""
    megabytes = (OUT / "big.joblib").stat().st_size / 1e6
    log(f"==> time to ready, {megabytes:.0f} MB pickle, servers on CPUs {layout['server']}")
    ferry, mlserver = [], []
    for _ in range(REPEAT):
        started = time.monotonic()
        process, _, ready, admin = start_ferry(layout, "sklearn", "big.joblib")
        wait_ready(ready, process, 300)
        seconds = time.monotonic() - started
        timings = json.loads(get(f"{admin}/status")[1])["load"]["timings"]
        ferry.append({"start_to_ready_s": seconds, **timings})
        stop(process)
        started = time.monotonic()
        process, _, ready = start_mlserver(layout, SKLEARN, "big.joblib", "big")
        wait_ready(ready, process, 300)
        mlserver.append({"start_to_ready_s": time.monotonic() - started})
        stop(process)
    median = lambda runs: statistics.median(r["start_to_ready_s"] for r in runs)
    return {"bytes": (OUT / "big.joblib").stat().st_size, "ferry": ferry, "mlserver": mlserver,
            "ferry_median_s": median(ferry), "mlserver_median_s": median(mlserver),
            "mlserver_over_ferry": median(mlserver) / median(ferry)}


def worker_costs(layout):
    """python_worker_costs.py: the worker's steps in one process, and a worker's round trip over pipes."""
    log("==> the worker's steps and the pipes' round trip (python_worker_costs.py)")
    server, other = min(cpus(layout["server"])), min(cpus(layout["load"]))
    command = [str(PYTHON), str(HERE / "python_worker_costs.py"), str(OUT), str(server)]
    if other != server:
        command.append(str(other))
    result = subprocess.run(command, env={**ENV, **ONE_THREAD}, check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def cell(value, spec, suffix=""):
    return "-" if value is None else format(value, spec) + suffix


def markdown(title, columns, rows):
    print(f"\n{title}\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def tables(results):
    for layout in results["layouts"]:
        runs = results["throughput"].get(layout["name"])
        if not runs:
            continue
        n = len(cpus(layout["server"]))
        markdown(
            f"servers on CPUs {layout['server']} (ferry-server's workers = MLServer's parallel_workers = floor "
            f"processes = {n}), oha on CPUs {layout['load']}, {CONNECTIONS} connections, one row, REST JSON; "
            f"medians of {ROUNDS} rounds of {SECONDS:g} s each (a ratio: the median of the rounds' ratios)",
            ["model", "ferry-server req/s", "p99 ms", "MLServer 1.7.1 req/s", "p99 ms", "floor calls/s",
             "ferry / MLServer", "ferry / floor", "floor / MLServer", "failed"],
            [[name, f"{r['ferry']['rps']:.0f}", f"{r['ferry']['p99_ms']:.2f}",
              cell(r.get("mlserver", {}).get("rps"), ".0f"), cell(r.get("mlserver", {}).get("p99_ms"), ".1f"),
              f"{r['floor']['calls_per_s']:.0f}", cell(r.get("ferry_over_mlserver"), ".1f", "x"),
              f"{r['ferry_over_floor']:.2f}x", cell(r.get("floor_over_mlserver"), ".1f", "x"),
              str(r["ferry"]["failed"] + r.get("mlserver", {}).get("failed", 0))]
             for name, r in runs.items()])
        markdown(
            "CPU time per request in µs (the server's process, its descendants: ferry-server's Python workers or "
            "MLServer's inference workers), the floor's per call; the cores oha used; the cores other jobs on the "
            "machine took from the run's CPUs (ferry-server, floor, MLServer runs)",
            ["model", "ferry-server", "its workers", "floor", "MLServer", "its workers", "oha cores: ferry, MLServer",
             "others' cores", "context switches a request: ferry-server, its workers"],
            [[name, f"{r['ferry']['server_us_per_request']:.0f}", f"{r['ferry']['workers_us_per_request']:.0f}",
              f"{r['floor']['us_per_call_per_process']:.0f}",
              cell(r.get("mlserver", {}).get("server_us_per_request"), ".0f"),
              cell(r.get("mlserver", {}).get("workers_us_per_request"), ".0f"),
              f"{r['ferry']['generator_cores']:.2f}, " + cell(r.get("mlserver", {}).get("generator_cores"), ".2f"),
              f"{r['ferry']['others_cores']:.2f}, {r['floor']['others_cores']:.2f}, "
              + cell(r.get("mlserver", {}).get("others_cores"), ".2f"),
              f"{r['ferry']['server_switches_per_request']:.1f}, {r['ferry']['workers_switches_per_request']:.1f}"]
             for name, r in runs.items()])
    if "ready" in results:
        r = results["ready"]
        markdown(
            f"time to ready, {r['bytes'] / 1e6:.0f} MB joblib pickle (uncompressed), local file, {REPEAT} starts each, "
            f"servers on CPUs {results['layouts'][0]['server']}: MLServer / ferry-server "
            f"{r['mlserver_over_ferry']:.2f}x",
            ["server", "median s", "every run s"],
            [[label, f"{r[f'{key}_median_s']:.2f}", ", ".join(f"{x['start_to_ready_s']:.2f}" for x in r[key])]
             for key, label in (("ferry", "ferry-server, start to /v2/health/ready"),
                                ("mlserver", "MLServer 1.7.1, start to model ready"))])
        for i, run in enumerate(r["ferry"], 1):
            phases = ", ".join(f"{k.removesuffix('_seconds')} {v:.3f}" for k, v in run.items()
                               if k.endswith("_seconds") and v is not None)
            print(f"ferry-server run {i} phases (s): {phases}")
    if "costs" in results:
        c = results["costs"]
        markdown("the worker's steps for one request, in one process (µs)",
                 ["model", "read_frame", "decode_inputs", "predict", "reply"],
                 [[name, *(f"{v:.1f}" for v in steps.values())] for name, steps in c["steps"].items()])
        markdown("a request's round trip to a worker over its pipes, identity model (µs)", ["where, how", "µs"],
                 [[name, f"{value:.1f}"] for name, value in c["round_trip"].items()])
    markdown("goals (ceiling: the floor / MLServer, what a server costing nothing but the framework would reach)",
             ["goal", "layout", "model", "value", "met", "ceiling"],
             [[g["goal"], g["layout"], g["model"], f"{g['value']:.2f}x", "yes" if g["met"] else "no",
               cell(g.get("ceiling"), ".1f", "x")] for g in results["goals"]])


def goals(results):
    met = []
    for layout, runs in results["throughput"].items():
        for model, r in runs.items():
            if "ferry_over_mlserver" in r:
                met.append({"goal": ">= 20x MLServer req/s", "layout": layout, "model": model,
                            "value": r["ferry_over_mlserver"], "met": r["ferry_over_mlserver"] >= 20,
                            "ceiling": r["floor_over_mlserver"]})
            met.append({"goal": ">= 0.5x the floor", "layout": layout, "model": model,
                        "value": r["ferry_over_floor"], "met": r["ferry_over_floor"] >= 0.5})
    return met


def main():
    layouts = [{"name": "pinned", "server": ENV.get("BENCH_SERVER_CPUS", "1"),
                "load": ENV.get("BENCH_LOAD_CPUS", "0")}]
    if ENV.get("BENCH_WIDE_CPUS"):
        layouts.append({"name": "shared", "server": ENV["BENCH_WIDE_CPUS"], "load": ENV["BENCH_WIDE_CPUS"]})
    os.sched_setaffinity(0, cpus(layouts[0]["load"]))  # the polling and bookkeeping stay off the servers' CPUs
    results = {"config": {"seconds": SECONDS, "rounds": ROUNDS, "connections": int(CONNECTIONS), "repeat": REPEAT},
               "layouts": layouts, "throughput": {}}
    try:
        if "throughput" in PARTS:
            for layout in layouts:
                results["throughput"][layout["name"]] = throughput(layout)
        if "ready" in PARTS:
            results["ready"] = time_to_ready(layouts[0])
        if "costs" in PARTS:
            results["costs"] = worker_costs(layouts[0])
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
    results["goals"] = goals(results)
    (OUT / "python.json").write_text(json.dumps(results, indent=1))
    tables(results)
    print(f"\nraw results: {OUT}/python.json")


if __name__ == "__main__":
    main()
