"""Writes the seed inputs of the fuzz targets into regressions/<target>/seed-*: valid requests against the fuzzing
model (ferry_server::fuzzing::signature) in JSON, in the binary extension and as a serialized gRPC request.

Usage: $FERRY_CACHE_DIR/venv/bin/python server-image/fuzz/make_seeds.py   (needs numpy and tritonclient[grpc])
"""

import json
import pathlib
import struct

from tritonclient.grpc import service_pb2

HERE = pathlib.Path(__file__).parent / "regressions"

INPUTS = [
    ("x", "FP32", [2, 4], [1.0, 2.5, -3.0, 4.0, 0.0, 1e-3, 7.0, 8.0]),
    ("flag", "BOOL", [2], [True, False]),
    ("text", "BYTES", [2], ["ferry", "fähre"]),
    ("count", "INT32", [2, 1], [1, -2]),
    ("id", "INT64", [3], [9007199254740993, -1, 0]),
    ("weight", "FP64", [1, 1], [0.5]),
]
FORMATS = {"FP32": "<f", "FP64": "<d", "INT32": "<i", "INT64": "<q", "BOOL": "<?"}


def raw(datatype, values):
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return b"".join(struct.pack(FORMATS[datatype], v) for v in values)


def write(target, name, data):
    path = HERE / target / f"seed-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    tensors = [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in INPUTS]
    request = {"id": "seed", "inputs": tensors, "outputs": [{"name": "y"}]}
    write("json_request", "all-datatypes", json.dumps(request).encode())
    nested = dict(request, inputs=[dict(tensors[0], data=[tensors[0]["data"][:4], tensors[0]["data"][4:]])] + tensors[1:])
    write("json_request", "nested", json.dumps(nested).encode())

    # Every other input raw, the rest JSON; every output raw.
    header = {"id": "seed", "inputs": [], "parameters": {"binary_data_output": True}}
    tail = b""
    for i, (name, datatype, shape, values) in enumerate(INPUTS):
        if i % 2 == 0:
            data = raw(datatype, values)
            header["inputs"].append({"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}})
            tail += data
        else:
            header["inputs"].append({"name": name, "datatype": datatype, "shape": shape, "data": values})
    text = json.dumps(header).encode()
    write("binary_request", "mixed", str(len(text)).encode() + b"\n" + text + tail)
    write("binary_request", "json-only", json.dumps(request).encode())

    typed = service_pb2.ModelInferRequest(model_name="fuzz", id="seed")
    for name, datatype, shape, values in INPUTS:
        tensor = typed.inputs.add(name=name, datatype=datatype, shape=shape)
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
                 "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}[datatype]
        getattr(tensor.contents, field).extend([v.encode() for v in values] if datatype == "BYTES" else values)
    typed.outputs.add(name="y")
    write("grpc_request", "typed", typed.SerializeToString())
    raw_request = service_pb2.ModelInferRequest(model_name="fuzz")
    for name, datatype, shape, values in INPUTS:
        raw_request.inputs.add(name=name, datatype=datatype, shape=shape)
        raw_request.raw_input_contents.append(raw(datatype, values))
    write("grpc_request", "raw", raw_request.SerializeToString())


if __name__ == "__main__":
    main()
