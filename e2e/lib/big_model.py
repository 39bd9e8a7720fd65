"""Writes big-1.onnx and big-2.onnx, two ONNX models of about MB megabytes each, to DIR: a table of floats (all 1.0
in version 1, 2.0 in version 2) that every request reads from. Input `float_input` [N, 4] FP32, output `y` [N, 4]:
the input plus the version. For the InPlace memory test and benchmark (`e2e/bench-strategies.sh`).

    python big_model.py DIR MB
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

work, mb = sys.argv[1], int(sys.argv[2])
floats = mb * 1024 * 1024 // 4
for version in (1, 2):
    table = numpy_helper.from_array(np.full(floats, float(version), dtype=np.float32), name="table")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), name="zero")
    # The index depends on the input, so the table is not folded away: every request reads it.
    nodes = [
        helper.make_node("Mul", ["float_input", "zero"], ["z"]),
        helper.make_node("Cast", ["z"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
        helper.make_node("Add", ["float_input", "picked"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [table, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, f"{work}/big-{version}.onnx")
