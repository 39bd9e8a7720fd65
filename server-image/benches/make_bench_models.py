#!/usr/bin/env python3
"""Models for benches/run.sh, written into the directory given as the first argument:

  model.joblib   a scikit-learn random forest (50 trees, depth 8, 8 features, 3 classes), served by MLServer
  model.onnx     the same forest exported with skl2onnx (zipmap disabled), served by ferry-server
  request.json   one OIP v2 JSON request (one row), sent unchanged to both servers
  request-N.json, request-N.bin (+ .header), grpc-N.bin
                 with --protocols: N = 1 and 1000 rows as JSON, as the binary tensor extension (the JSON header's
                 length in .header; outputs asked for in binary) and as a serialized gRPC ModelInferRequest (typed
                 fp32_contents, which every gRPC OIP server reads); grpc-response-1.bin, a one-row
                 ModelInferResponse for the gRPC floor
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
    return x


def protocol_requests(out, x):
    from tritonclient.grpc import service_pb2  # the test venv has tritonclient[grpc]

    for rows in (1, 1000):
        batch = np.ascontiguousarray(x[:rows], dtype="<f4")
        shape = [rows, batch.shape[1]]
        tensor = {"name": "float_input", "shape": shape, "datatype": "FP32"}
        (out / f"request-{rows}.json").write_text(json.dumps({"inputs": [dict(tensor, data=batch.ravel().tolist())]}))
        raw = batch.tobytes()
        header = json.dumps({
            "inputs": [dict(tensor, parameters={"binary_data_size": len(raw)})],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in ("label", "probabilities")],
        }).encode()
        (out / f"request-{rows}.bin").write_bytes(header + raw)
        (out / f"request-{rows}.bin.header").write_text(str(len(header)))
        request = service_pb2.ModelInferRequest(model_name="bench")
        grpc_input = request.inputs.add(name="float_input", datatype="FP32", shape=shape)
        grpc_input.contents.fp32_contents.extend(batch.ravel().tolist())
        (out / f"grpc-{rows}.bin").write_bytes(request.SerializeToString())
    response = service_pb2.ModelInferResponse(model_name="bench", model_version="1")
    response.outputs.add(name="label", datatype="INT64", shape=[1])
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 3])
    response.raw_output_contents.extend([np.array([1], "<i8").tobytes(), np.array([0.1, 0.7, 0.2], "<f4").tobytes()])
    (out / "grpc-response-1.bin").write_bytes(response.SerializeToString())


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
    x = forest(out)
    if "--protocols" in sys.argv[2:]:
        protocol_requests(out, x)
    if "--big" in sys.argv[2:]:
        big(out)


if __name__ == "__main__":
    main()
