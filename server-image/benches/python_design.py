#!/usr/bin/env python3
"""Measures the choice behind ferry-server's Python runtime: embedded CPython (one interpreter, one GIL) against
worker processes. One-row predictions of scikit-learn models, for a fixed time each:

  threads   N threads calling predict in one process: the most an embedded interpreter gives, since every
            call holds the GIL for most of its time;
  processes N processes calling predict: the most worker processes give (ferry-server's own cost on top of
            this is measured by the serving benchmark, server-image/benches/python.sh, whose floor,
            python_floor.py, runs `processes` below).

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
CORES = os.cpu_count() or 1


def loop(model, row, seconds):
    calls, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        model.predict(row)
        calls += 1
    return calls


def threads(model, row, n, seconds):
    counts = [0] * n

    def run(i):
        counts[i] = loop(model, row, seconds)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def load_joblib(path, n_features):
    return joblib.load(path), np.zeros((1, n_features))


_barrier = None


def _keep_barrier(barrier):
    global _barrier
    _barrier = barrier


def one_process(job):
    load, args, seconds = job
    model, row = load(*args)
    for _ in range(3):  # first-call costs before the clock starts
        model.predict(row)
    _barrier.wait()
    return loop(model, row, seconds)


def processes(load, args, n, seconds):
    """Calls per second of n fresh processes, each making `(model, row) = load(*args)` (a module-level function, so
    it reaches a spawned process) and then calling `model.predict(row)` in a loop for `seconds`, all together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n)
    with context.Pool(n, initializer=_keep_barrier, initargs=(barrier,)) as pool:
        return sum(pool.map(one_process, [(load, args, seconds)] * n, chunksize=1)) / seconds


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(f"{CORES} cores, {seconds:.0f} s per figure, one-row predict calls per second")
    for name, features in [("sklearn_logreg", 4), ("sklearn_forest", 6)]:
        path = MODELS / f"{name}.joblib"
        model = joblib.load(path)
        row = np.zeros((1, features))
        one = threads(model, row, 1, seconds)
        many_threads = threads(model, row, CORES, seconds)
        many_processes = processes(load_joblib, (path, features), CORES, seconds)
        print(
            f"{name}: 1 thread {one:,.0f}; {CORES} threads {many_threads:,.0f} ({many_threads / one:.2f}x); "
            f"{CORES} processes {many_processes:,.0f} ({many_processes / one:.2f}x)"
        )


if __name__ == "__main__":
    main()
