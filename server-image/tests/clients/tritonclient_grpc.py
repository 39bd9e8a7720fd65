"""Drives ferry-server's gRPC port with tritonclient's gRPC client, a standard Open Inference Protocol client, unchanged.

Usage: python tritonclient_grpc.py HOST:PORT MODEL EXPECTED_JSON EXPECTATION_NAME
Every client option is left at its default (inputs as raw_input_contents, outputs as raw_output_contents).
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main():
    url, model, expected_path, expectation = sys.argv[1:5]
    expected = json.load(open(expected_path))[expectation]
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server live"
    assert client.is_server_ready(), "server ready"
    assert client.is_model_ready(model), "model ready"
    server = client.get_server_metadata()
    assert server.name == "ferry-server", server
    assert "binary_tensor_data" in server.extensions, server
    metadata = client.get_model_metadata(model)
    (input_spec,) = metadata.inputs

    rows = np.array(expected["rows"], dtype=np.float32)
    tensor = grpcclient.InferInput(input_spec.name, list(rows.shape), input_spec.datatype)
    tensor.set_data_from_numpy(rows)
    outputs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer(model, [tensor], outputs=outputs, request_id="tritonclient-grpc-1")

    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    assert labels.tolist() == expected["labels"], (labels.tolist(), expected["labels"])
    worst = float(np.max(np.abs(probabilities - np.array(expected["probabilities"]))))
    assert worst <= 1e-5, worst
    assert result.get_response().id == "tritonclient-grpc-1"

    # No outputs named: every output comes back.
    every = client.infer(model, [tensor])
    assert every.as_numpy("label").tolist() == expected["labels"]

    try:
        client.infer("no-such-model", [tensor])
    except grpcclient.InferenceServerException as error:
        assert error.status() == "StatusCode.NOT_FOUND", error.status()
        assert "unknown model" in error.message(), error.message()
    else:
        raise AssertionError("an unknown model must fail")
    print(f"tritonclient.grpc: {len(labels)} rows match scikit-learn (max probability error {worst:.2e})")


if __name__ == "__main__":
    main()
