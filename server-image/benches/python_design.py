#!/usr/bin/env python3
"""Measures the choice behind ferry-server's Python runtime: embedded CPython (one interpreter, one GIL) against
worker processes. One-row predictions of scikit-learn models, for a fixed time each:

  threads   N threads calling predict in one process: the most an embedded interpreter gives, since every
            call holds the GIL for most of its time;
  processes N processes calling predict: the most worker processes give (ferry-server's own cost on top of
            this is measured by the serving benchmark, server-image/benches/python.sh, whose floor,
            python_floor.py, runs `processes` below).

    bash server-image/scripts/setup-test-deps.sh    # makes ~/.cache/ferry/venv-python
    ~/.cache/ferry/venv-python/bin/python server-image/benches/python_design.py [seconds]

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


_barrier = _model = _row = None


def _prepare(barrier, load, args):
    global _barrier, _model, _row
    _barrier = barrier
    _model, _row = load(*args)


def _timed(seconds):
    _barrier.wait()
    return loop(_model, _row, seconds)


def processes(load, args, n, seconds, next_round=None):
    """Calls per second of n fresh processes, each making `(model, row) = load(*args)` (a module-level function, so
    it reaches a spawned process) and then calling `model.predict(row)` in a loop for `seconds`, all together: a
    list with one figure per round. `next_round(previous figure or None)` is called before each round, once every
    process is loaded and warm, and says whether to run one (the processes wait idle meanwhile); without it, one."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(n, initializer=_prepare, initargs=(context.Barrier(n), load, args)) as pool:
        pool.map(_timed, [0.2] * n, chunksize=1)  # first-call costs, before any figure
        figures = []
        while next_round(figures[-1] if figures else None) if next_round else not figures:
            figures.append(sum(pool.map(_timed, [seconds] * n, chunksize=1)) / seconds)
        return figures


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(f"{CORES} cores, {seconds:.0f} s per figure, one-row predict calls per second")
    for name, features in [("sklearn_logreg", 4), ("sklearn_forest", 6)]:
        path = MODELS / f"{name}.joblib"
        model = joblib.load(path)
        row = np.zeros((1, features))
        one = threads(model, row, 1, seconds)
        many_threads = threads(model, row, CORES, seconds)
        many_processes = processes(load_joblib, (path, features), CORES, seconds)[0]
        print(
            f"{name}: 1 thread {one:,.0f}; {CORES} threads {many_threads:,.0f} ({many_threads / one:.2f}x); "
            f"{CORES} processes {many_processes:,.0f} ({many_processes / one:.2f}x)"
        )


if __name__ == "__main__":
    main()
