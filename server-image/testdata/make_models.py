#!/usr/bin/env python3
"""Generates the ONNX models and expected predictions that ferry-server's tests use.

Run from anywhere with the test virtual environment (see scripts/setup-test-deps.sh):

    $FERRY_CACHE_DIR/venv/bin/python server-image/testdata/make_models.py

Writes server-image/testdata/models/*.onnx and server-image/testdata/expected.json. The expectations are what
scikit-learn itself predicts; the script refuses to write anything unless ONNX Runtime reproduces every label
exactly and every probability within 1e-5, so a committed expectation is always one that the runtime meets.
"""

import json
import pathlib
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

HERE = pathlib.Path(__file__).resolve().parent
MODELS = HERE / "models"
TOLERANCE = 1e-5
# Opsets every model is stamped with: old enough for any ONNX Runtime 1.17+, new enough for all converters used.
OPSETS = {"": 17, "ai.onnx.ml": 3}
ROWS = 16


def dataset(n_features, n_classes, seed):
    x, y = make_classification(
        n_samples=400 + ROWS,
        n_features=n_features,
        n_informative=n_features - 1,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    # Rounded and cast to float32 so that scikit-learn, ONNX Runtime and the JSON request see identical numbers.
    x = np.round(x, 3).astype(np.float32)
    return x[:-ROWS], y[:-ROWS], x[-ROWS:]


def sklearn_models():
    multi_x, multi_y, multi_rows = dataset(n_features=4, n_classes=3, seed=7)
    bin_x, bin_y, bin_rows = dataset(n_features=6, n_classes=2, seed=11)
    return [
        ("logreg", LogisticRegression(max_iter=500), multi_x, multi_y, multi_rows),
        ("mlp", MLPClassifier(hidden_layer_sizes=(16,), max_iter=800, random_state=0), multi_x, multi_y, multi_rows),
        ("gb_multiclass", GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), multi_x, multi_y, multi_rows),
        ("rf_binary", RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0), bin_x, bin_y, bin_rows),
        ("gb_binary", GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), bin_x, bin_y, bin_rows),
    ]


def check_with_onnxruntime(path, rows, labels, probabilities):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_labels, got_probabilities = session.run(["label", "probabilities"], {"float_input": rows})
    if not np.array_equal(got_labels, labels):
        raise SystemExit(f"{path.name}: ONNX Runtime labels {got_labels} differ from scikit-learn {labels}")
    worst = float(np.max(np.abs(got_probabilities - probabilities)))
    if worst > TOLERANCE:
        raise SystemExit(f"{path.name}: probabilities differ from scikit-learn by {worst}")


def export_sklearn(expected):
    for name, model, x, y, rows in sklearn_models():
        model.fit(x, y)
        onx = convert_sklearn(
            model,
            initial_types=[("float_input", FloatTensorType([None, x.shape[1]]))],
            options={"zipmap": False},
            target_opset=OPSETS,
        )
        onx.graph.name = name  # skl2onnx picks a random graph name; a fixed one keeps regeneration byte-stable
        path = MODELS / f"{name}.onnx"
        path.write_bytes(onx.SerializeToString())
        labels = model.predict(rows.astype(np.float64)).astype(np.int64)
        probabilities = model.predict_proba(rows.astype(np.float64))
        check_with_onnxruntime(path, rows, labels, probabilities)
        expected[name] = {
            "file": f"models/{name}.onnx",
            "input": "float_input",
            "rows": [[float(v) for v in row] for row in rows],
            "labels": [int(v) for v in labels],
            "probabilities": [[float(v) for v in row] for row in probabilities],
        }


def save(graph, name, opsets=None):
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": 17}).items()]
    model = helper.make_model(graph, opset_imports=opset_imports, producer_name="ferry-testdata")
    model.ir_version = 8
    onnx.save(model, str(MODELS / name))


def dtypes_model():
    """One input and output per OIP datatype that sklearn exports do not cover: FP64, INT32, INT64, BOOL."""
    nodes, inputs, outputs, inits = [], [], [], []
    for suffix, elem, op in [
        ("fp64", TensorProto.DOUBLE, "Add"),
        ("int32", TensorProto.INT32, "Add"),
        ("int64", TensorProto.INT64, "Add"),
        ("bool", TensorProto.BOOL, "Not"),
    ]:
        inputs.append(helper.make_tensor_value_info(f"x_{suffix}", elem, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"y_{suffix}", elem, ["batch", 2]))
        if op == "Add":
            inits.append(helper.make_tensor(f"one_{suffix}", elem, [], [1]))
            nodes.append(helper.make_node("Add", [f"x_{suffix}", f"one_{suffix}"], [f"y_{suffix}"]))
        else:
            nodes.append(helper.make_node("Not", [f"x_{suffix}"], [f"y_{suffix}"]))
    save(helper.make_graph(nodes, "dtypes", inputs, outputs, inits), "dtypes.onnx")


def strings_model():
    """BYTES in and out: the input strings unchanged, and whether each equals "ferry"."""
    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])
    same = helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])
    is_ferry = helper.make_tensor_value_info("is_ferry", TensorProto.BOOL, ["batch"])
    word = helper.make_tensor("word", TensorProto.STRING, [], [b"ferry"])
    nodes = [
        helper.make_node("Identity", ["text"], ["same"]),
        helper.make_node("Equal", ["text", "word"], ["is_ferry"]),
    ]
    save(helper.make_graph(nodes, "strings", [text], [same, is_ferry], [word]), "strings.onnx", {"": 19})


def unsupported_operator_model():
    """A graph that uses an operator no ONNX Runtime build implements: Frobnicate from a custom domain."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="ferry.example")
    save(helper.make_graph([node], "unsupported", [x], [y]), "unsupported_operator.onnx", {"": 17, "ferry.example": 1})


def compact_json(value):
    """JSON with one row of numbers per line, so that diffs of regenerated expectations stay readable."""
    text = json.dumps(value, indent=1)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def warmup_fails_model():
    """Loads, but cannot run on the synthetic warm-up input (one element): it reshapes its input to exactly 3."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    shape = helper.make_tensor("three", TensorProto.INT64, [1], [3])
    node = helper.make_node("Reshape", ["x", "three"], ["y"])
    save(helper.make_graph([node], "reshape_to_three", [x], [y], [shape]), "warmup_fails.onnx")


def future_opset_model():
    """Imports opset 30 of the default domain, newer than any ONNX Runtime 1.31 loads: refused from its header."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("Identity", ["x"], ["y"])
    save(helper.make_graph([node], "future", [x], [y]), "future_opset.onnx", {"": 30})


def described_model():
    """A model with every header field set (producer, version, domain, description, metadata_props, opsets)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "described", [x], [y])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="ferry-testdata",
        producer_version="1.2.3",
        domain="dev.ferry.example",
        model_version=42,
        doc_string="Identity on four features, with metadata.",
    )
    model.ir_version = 8
    helper.set_model_props(model, {"trained_on": "iris", "git_sha": "abc123"})
    onnx.save(model, str(MODELS / "described.onnx"))


def main():
    MODELS.mkdir(exist_ok=True)
    expected = {}
    export_sklearn(expected)
    dtypes_model()
    strings_model()
    unsupported_operator_model()
    warmup_fails_model()
    future_opset_model()
    described_model()
    (HERE / "expected.json").write_text(compact_json(expected))
    for path in sorted(MODELS.iterdir()):
        print(f"{path.relative_to(HERE)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
