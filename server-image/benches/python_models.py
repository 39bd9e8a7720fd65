#!/usr/bin/env python3
"""Models for benches/python.sh, written into the directory given as the first argument. Run with the Python
runtime's own interpreter ($FERRY_CACHE_DIR/venv-python), so every file is made by the framework versions that
ferry-server's workers load it with:

  logreg.joblib     scikit-learn LogisticRegression (8 features, 2 classes)
  forest.joblib     scikit-learn RandomForestClassifier, 100 trees, grown out (the same data)
  xgboost.json      XGBoost Booster, 100 rounds of binary:logistic, depth 6 (the same data)
  sklearn-request.json, xgboost-request.json
                    one OIP v2 JSON request each (one row: FP64 for scikit-learn, FP32 for XGBoost), sent
                    unchanged to ferry-server, to MLServer and, as the same row, to the floor; the scikit-learn one
                    names the outputs predict and predict_proba, so MLServer computes both as ferry-server's worker
                    always does
  big.joblib        with --big: a RandomForestClassifier of ~100 MB (deep trees fitted to noise), joblib, uncompressed

With --onnx (run with $FERRY_CACHE_DIR/venv, which has skl2onnx), instead: forest.onnx, the skl2onnx export of
forest.joblib (zipmap off), and onnx-request.json, the same row as FP32.
"""

import json
import pathlib
import sys

import numpy as np

FEATURES = 8
BIG_BYTES = 100 << 20


def dataset():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=FEATURES, n_informative=6, random_state=3)
    # Rounded so that the JSON request carries exactly the numbers the frameworks see.
    return np.round(x, 3), y


def request(row, datatype, outputs, name="input"):
    tensor = {"name": name, "shape": [1, len(row)], "datatype": datatype, "data": [float(v) for v in row]}
    body = {"inputs": [tensor]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(body)


def models(out):
    import joblib
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = dataset()
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), out / "logreg.joblib")
    forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1).fit(x, y)
    forest.n_jobs = None  # predict on one thread, as it is served
    joblib.dump(forest, out / "forest.joblib")
    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 0}
    xgboost.train(params, xgboost.DMatrix(x.astype(np.float32), label=y), num_boost_round=100).save_model(
        out / "xgboost.json"
    )
    (out / "sklearn-request.json").write_text(request(x[0], "FP64", ["predict", "predict_proba"]))
    (out / "xgboost-request.json").write_text(request(x[0], "FP32", ["predict"]))


def big(out):
    """A forest of fully grown trees fitted to noise, ~100 MB: 16 trees are trained, then copied (deep copies, so
    each is pickled in full) until the forest reaches the size; training all of them would take a minute here."""
    import copy
    import pickle

    import joblib
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x, y = rng.random((50_000, FEATURES)), rng.integers(0, 2, 50_000)
    forest = RandomForestClassifier(n_estimators=16, random_state=0, n_jobs=-1).fit(x, y)
    per_tree = sum(len(pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)) for t in forest.estimators_) / 16
    trees = -(-BIG_BYTES // int(per_tree))
    forest.estimators_ = [copy.deepcopy(forest.estimators_[i % 16]) for i in range(trees)]
    forest.n_estimators, forest.n_jobs = trees, None
    joblib.dump(forest, out / "big.joblib", compress=0)


def onnx_export(out):
    import joblib
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        joblib.load(out / "forest.joblib"),
        initial_types=[("float_input", FloatTensorType([None, FEATURES]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    (out / "forest.onnx").write_bytes(onx.SerializeToString())
    row = json.loads((out / "sklearn-request.json").read_text())["inputs"][0]["data"]
    (out / "onnx-request.json").write_text(request(row, "FP32", [], name="float_input"))


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if "--onnx" in sys.argv[2:]:
        onnx_export(out)
        return
    models(out)
    if "--big" in sys.argv[2:]:
        big(out)


if __name__ == "__main__":
    main()
