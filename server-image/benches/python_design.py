#!/usr/bin/env python3
"""Measures the choice behind ferry-server's Python runtime: embedded CPython (one interpreter, one GIL) against
worker processes. One-row predictions of scikit-learn models, for a fixed time each:

  threads   N threads calling predict in one process: the most an embedded interpreter gives, since every
            call holds the GIL for most of its time;
  processes N processes calling predict: the most worker processes give (ferry-server's own cost on top of
            this is measured by the serving benchmark, server-image/benches/run.sh).

    $FERRY_CACHE_DIR/venv-python/bin/python server-image/benches/python_design.py [seconds]

Prints calls per second for each, and the ratio of N to 1 thread.
"""

import multiprocessing
import os
import pathlib
import sys
import threading
import time

import joblib
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MODELS = HERE.parent / "testdata" / "python" / "models"
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
CORES = os.cpu_count() or 1


def loop(model, row, seconds):
    calls, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        model.predict(row)
        calls += 1
    return calls


def threads(model, row, n):
    counts = [0] * n

    def run(i):
        counts[i] = loop(model, row, SECONDS)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / SECONDS


def one_process(args):
    path, n_features = args
    model = joblib.load(path)
    return loop(model, np.zeros((1, n_features)), SECONDS)


def processes(path, n_features, n):
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        return sum(pool.map(one_process, [(path, n_features)] * n)) / SECONDS


def main():
    print(f"{CORES} cores, {SECONDS:.0f} s per figure, one-row predict calls per second")
    for name, features in [("sklearn_logreg", 4), ("sklearn_forest", 6)]:
        path = MODELS / f"{name}.joblib"
        model = joblib.load(path)
        row = np.zeros((1, features))
        one = threads(model, row, 1)
        many_threads = threads(model, row, CORES)
        many_processes = processes(path, features, CORES)
        print(
            f"{name}: 1 thread {one:,.0f}; {CORES} threads {many_threads:,.0f} ({many_threads / one:.2f}x); "
            f"{CORES} processes {many_processes:,.0f} ({many_processes / one:.2f}x)"
        )


if __name__ == "__main__":
    main()
