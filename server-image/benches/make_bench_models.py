#!/usr/bin/env python3
"""Models for benches/run.sh, written into the directory given as the first argument:

  model.joblib   a scikit-learn random forest (50 trees, depth 8, 8 features, 3 classes), served by MLServer
  model.onnx     the same forest exported with skl2onnx (zipmap disabled), served by ferry-server
  request.json   one OIP v2 JSON request (one row), sent unchanged to both servers
  big.onnx       with --big: a 1 GiB ONNX model (one float32 initializer read through Gather)
  big-request.json
"""

import json
import pathlib
import sys

import joblib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

BIG_ELEMENTS = 1 << 28  # float32: 1 GiB


def forest(out):
    x, y = make_classification(n_samples=4000, n_features=8, n_informative=6, n_classes=3, random_state=3)
    x = np.round(x, 3).astype(np.float32)
    model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(x, y)
    joblib.dump(model, out / "model.joblib")
    onx = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, 8]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    row = [float(v) for v in x[0]]
    request = {"inputs": [{"name": "float_input", "shape": [1, 8], "datatype": "FP32", "data": row}]}
    (out / "request.json").write_text(json.dumps(request))


def big(out):
    weights = np.random.default_rng(0).random(BIG_ELEMENTS, dtype=np.float32)
    initializer = numpy_helper.from_array(weights, name="weights")
    del weights
    index = helper.make_tensor_value_info("index", TensorProto.INT64, ["n"])
    values = helper.make_tensor_value_info("values", TensorProto.FLOAT, ["n"])
    node = helper.make_node("Gather", ["weights", "index"], ["values"], axis=0)
    graph = helper.make_graph([node], "big", [index], [values], [initializer])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ferry-bench")
    model.ir_version = 8
    onnx.save(model, str(out / "big.onnx"))
    request = {"inputs": [{"name": "index", "shape": [4], "datatype": "INT64", "data": [0, 1, 2, BIG_ELEMENTS - 1]}]}
    (out / "big-request.json").write_text(json.dumps(request))


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    forest(out)
    if "--big" in sys.argv[2:]:
        big(out)


if __name__ == "__main__":
    main()
