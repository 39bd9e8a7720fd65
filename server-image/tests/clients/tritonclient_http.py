"""Drives ferry-server with tritonclient's HTTP client, a standard Open Inference Protocol client, unchanged.

Usage: python tritonclient_http.py HOST:PORT MODEL EXPECTED_JSON EXPECTATION_NAME
Every client option is left at its default, so tensors travel in the binary tensor data extension both ways.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, expected_path, expectation = sys.argv[1:5]
    expected = json.load(open(expected_path))[expectation]
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server live"
    assert client.is_server_ready(), "server ready"
    assert client.is_model_ready(model), "model ready"
    assert client.get_server_metadata()["name"] == "ferry-server"
    metadata = client.get_model_metadata(model)
    (input_spec,) = metadata["inputs"]

    rows = np.array(expected["rows"], dtype=np.float32)
    tensor = httpclient.InferInput(input_spec["name"], list(rows.shape), input_spec["datatype"])
    tensor.set_data_from_numpy(rows)
    outputs = [
        httpclient.InferRequestedOutput("label"),
        httpclient.InferRequestedOutput("probabilities"),
    ]
    result = client.infer(model, [tensor], outputs=outputs, request_id="tritonclient-1")

    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    assert labels.tolist() == expected["labels"], (labels.tolist(), expected["labels"])
    worst = float(np.max(np.abs(probabilities - np.array(expected["probabilities"]))))
    assert worst <= 1e-5, worst
    response = result.get_response()
    assert response["id"] == "tritonclient-1"
    # The defaults asked for raw outputs: the JSON carries their sizes, not their data.
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in response["outputs"]), response
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    # No outputs named: the client asks for every output in binary (binary_data_output).
    every = client.infer(model, [tensor])
    assert every.as_numpy("label").tolist() == expected["labels"]

    try:
        client.infer("no-such-model", [tensor])
    except httpclient.InferenceServerException as error:
        assert "unknown model" in error.message(), error.message()
    else:
        raise AssertionError("an unknown model must fail")
    print(f"tritonclient: {len(labels)} rows match scikit-learn (max probability error {worst:.2e})")


if __name__ == "__main__":
    main()
