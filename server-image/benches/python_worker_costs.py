#!/usr/bin/env python3
"""Where a one-row request's time goes in ferry-server's Python worker (server-image/python/ferry_worker.py), and
what the pipes between ferry-server and a worker cost. Run with $FERRY_CACHE_DIR/venv-python:

    python python_worker_costs.py DIR SERVER_CPU [OTHER_CPU]

DIR holds python_models.py's files. Prints JSON with microseconds per request:
  steps        for each model, each step the worker takes for one request, run in this process on SERVER_CPU:
               read_frame (header JSON), decode_inputs (numpy from the raw bytes), predict (the framework),
               reply (encode_outputs, header JSON, write_frame into memory);
  round_trip   one request to a real worker process over pipes, serving a custom model whose predict returns the
               input's first column (so the figure is the pipes and the worker's framing, not a framework), from
               this process writing as ferry-server does (worker.rs: length, header and each buffer in
               a write of its own, the reply read through an 8 KiB buffer), the worker answering as it does
               (ferry_worker.write_frame: unbuffered, one write per part) - and, for comparison, with each frame
               in a single write both ways. Both processes on SERVER_CPU (as ferry-server and its worker with one
               CPU), then, with OTHER_CPU, this process there and the worker on SERVER_CPU.
"""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

WORKER_DIR = pathlib.Path(__file__).resolve().parent.parent / "python"
sys.path.insert(0, str(WORKER_DIR))
import ferry_worker as fw  # noqa: E402

# The worker, with write_frame replaced by one that joins the frame into one write when argv[2] is "joined".
WRAPPER = """
import json, struct, sys
sys.path.insert(0, sys.argv[1])
import ferry_worker
if sys.argv[2] == "joined":
    def write_frame(stream, header, buffers=()):
        buffers = [memoryview(b).cast("B") for b in buffers]
        header["buffers"] = [b.nbytes for b in buffers]
        data = json.dumps(header, separators=(",", ":")).encode()
        stream.write(b"".join([struct.pack("<I", len(data)), data, *buffers]))
    ferry_worker.write_frame = write_frame
ferry_worker.main()
"""
IDENTITY = """
class Model:
    def load(self, path):
        pass

    def predict(self, inputs):
        return {"predict": inputs["input"][:, 0]}
"""
SIGNATURE = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, -1]}],
             "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}]}


def per_call(function, seconds=0.5):
    """Microseconds per call, over batches of calls for at least `seconds` after a warm-up."""
    for _ in range(20):
        function()
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(20):
            function()
        calls += 20
        now = time.perf_counter()
        if now - start >= seconds:
            return (now - start) / calls * 1e6


def frame_parts(header, buffers):
    """A frame as worker.rs writes it: the header with the buffers' sizes, compact JSON, then the buffers."""
    data = json.dumps(dict(header, buffers=[len(b) for b in buffers]), separators=(",", ":")).encode()
    return [struct.pack("<I", len(data)), data, *buffers]


def infer_parts(request_file):
    tensor = json.loads(request_file.read_text())["inputs"][0]
    raw = np.asarray(tensor["data"], dtype=fw.DATATYPES[tensor["datatype"]]).tobytes()
    spec = {"name": "input", "datatype": tensor["datatype"], "shape": tensor["shape"]}
    return frame_parts({"op": "infer", "inputs": [spec]}, [raw])


def steps(model, parts):
    blob = b"".join(parts)
    header, buffers = fw.read_frame(io.BytesIO(blob))
    inputs = fw.decode_inputs(header, buffers, model)
    outputs = model.predict(inputs)
    sink = io.BytesIO()

    def reply():
        specs, data = fw.encode_outputs(outputs, model)
        sink.seek(0)
        fw.write_frame(sink, {"ok": {"outputs": specs}}, data)

    return {
        "read_frame": per_call(lambda: fw.read_frame(io.BytesIO(blob))),
        "decode_inputs": per_call(lambda: fw.decode_inputs(header, buffers, model)),
        "predict": per_call(lambda: model.predict(inputs)),
        "reply": per_call(reply),
    }


def round_trip(load, parts, joined, worker_cpu):
    command = [sys.executable, "-I", "-u", "-c", WRAPPER, str(WORKER_DIR), "joined" if joined else "split"]
    worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                              preexec_fn=lambda: os.sched_setaffinity(0, {worker_cpu}))
    to_worker, from_worker = worker.stdin.fileno(), io.BufferedReader(worker.stdout, 8192)

    def call(frame):
        if joined:
            os.write(to_worker, b"".join(frame))
        else:
            for part in frame:
                os.write(to_worker, part)
        header, _ = fw.read_frame(from_worker)
        if "ok" not in header:
            raise SystemExit(f"the worker answered {header}")

    call(frame_parts(load, []))
    try:
        return per_call(lambda: call(parts), seconds=1.0)
    finally:
        worker.stdin.close()
        worker.wait()


def main():
    directory, server_cpu = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    other_cpu = int(sys.argv[3]) if len(sys.argv) > 3 else None
    os.sched_setaffinity(0, {server_cpu})
    fw.guarded = lambda base, approved: base  # this benchmark's own files: no allow-list here
    roots = ["sklearn", "xgboost", "lightgbm"]
    models = {
        "sklearn LogisticRegression": (fw.Sklearn, "logreg.joblib", "sklearn"),
        "sklearn RandomForest, 100 trees": (fw.Sklearn, "forest.joblib", "sklearn"),
        "XGBoost, 100 rounds": (fw.Xgboost, "xgboost.json", "xgboost"),
    }
    result = {"steps": {}, "round_trip": {}}
    for name, (loader, file, kind) in models.items():
        model = loader({"path": str(directory / file), "joblib": True, "model_roots": roots})
        result["steps"][name] = steps(model, infer_parts(directory / f"{kind}-request.json"))
    parts = infer_parts(directory / "sklearn-request.json")
    with tempfile.TemporaryDirectory(prefix="ferry-identity-") as identity:
        (pathlib.Path(identity) / "model.py").write_text(IDENTITY)
        load = {"op": "load", "format": "python", "path": identity, "signature": SIGNATURE}
        for label, cpu in (("same CPU", server_cpu), ("other CPU", other_cpu)):
            if cpu is None:
                continue
            os.sched_setaffinity(0, {cpu})
            for joined in (False, True):
                key = f"{label}, {'one write a frame' if joined else 'as today'}"
                result["round_trip"][key] = round_trip(load, parts, joined, server_cpu)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
