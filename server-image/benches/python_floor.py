#!/usr/bin/env python3
"""The floor of benches/python.sh: a framework's own predict on one row in a loop, one process per core, with no
server in between (python_design.processes).

    python python_floor.py FORMAT MODEL REQUEST SECONDS PROCESSES

Prints {"ready": true} once every process has loaded the model and called it, then runs a round of SECONDS for
each line read from stdin and prints {"calls_per_s": ...} after it, until stdin ends (`echo | python ...` for one
round). Between rounds the processes wait idle, so the benchmark can alternate the floor with the servers.

FORMAT is sklearn, xgboost (run with $FERRY_CACHE_DIR/venv-python, the runtime's own frameworks) or onnx (run with
$FERRY_CACHE_DIR/venv, which has the onnxruntime wheel whose library ferry-server loads). The row is the first input
of the OIP JSON REQUEST, with its datatype and shape. Each call does what ferry-server does with one request once
the row is an array: for scikit-learn, predict and, for a classifier, predict_proba (ferry_worker.py's Sklearn
computes both); for XGBoost, Booster.inplace_predict with nthread 1; for ONNX, InferenceSession.run with one
intra-op thread (ferry-server's sessions on one core). Start it with one thread per library (OMP_NUM_THREADS=1 and
the like), as ferry-server starts its workers, and pinned to the server's cores.
"""

import json
import sys

import numpy as np

from python_design import processes

DTYPES = {"FP32": "<f4", "FP64": "<f8"}


class Sklearn:
    def __init__(self, path):
        import joblib

        self.model = joblib.load(path)
        self.proba = getattr(self.model, "classes_", None) is not None and hasattr(self.model, "predict_proba")

    def predict(self, x):
        self.model.predict(x)
        if self.proba:
            self.model.predict_proba(x)


class Xgboost:
    def __init__(self, path):
        import xgboost

        self.booster = xgboost.Booster()
        self.booster.load_model(path)
        self.booster.set_param({"nthread": 1})

    def predict(self, x):
        self.booster.inplace_predict(x, validate_features=False)


class Onnx:
    def __init__(self, path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def predict(self, x):
        self.session.run(None, {self.name: x})


FORMATS = {"sklearn": Sklearn, "xgboost": Xgboost, "onnx": Onnx}


def load(format_, path, request):
    tensor = json.loads(request)["inputs"][0]
    row = np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
    return FORMATS[format_](path), row


def next_round(previous):
    print(json.dumps({"ready": True} if previous is None else {"calls_per_s": previous}), flush=True)
    return bool(sys.stdin.readline())


def main():
    format_, path, request, seconds, n = sys.argv[1:6]
    with open(request) as f:
        body = f.read()
    processes(load, (format_, path, body), int(n), float(seconds), next_round)


if __name__ == "__main__":
    main()
