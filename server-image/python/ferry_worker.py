"""ferry-server's Python worker: loads one model and answers inference requests from ferry-server over a pipe.

ferry-server starts one worker process per core for each loaded version (`python3 -I ferry_worker.py`), with an
empty environment but for thread limits, and talks to it on stdin/stdout. Each message is a frame: a 4-byte
little-endian length, that many bytes of JSON (the header), then the raw buffers the header lists by size in
`"buffers"`. Requests are `{"op": "versions"}`, `{"op": "load", ...}` and `{"op": "infer", ...}`; every reply is
`{"ok": ...}` or `{"error": {"kind": ..., "message": ...}}` with kind `bad_input`, `unsafe`, `load` or
`internal`. The worker is written against this file's ferry-server only: both ship in the same image.

The model file has been scanned by ferry-server before this process sees it: a pickle is loaded only after every
global it imports passed the allow-list, and the unpickler here refuses any global outside the set ferry-server
approved, so the two checks must agree before anything is constructed.
"""

import importlib.metadata
import json
import os
import pickle
import struct
import sys

# The packages whose versions the runtime reports and checks model files against, with the distributions that
# provide each (XGBoost's CPU-only build is the distribution `xgboost-cpu` of the package `xgboost`).
PACKAGES = {
    "scikit-learn": ("scikit-learn",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "lightgbm": ("lightgbm",),
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "joblib": ("joblib",),
}

# Replies with at most this many bytes of tensors are written in one piece.
SMALL_FRAME_BYTES = 64 << 10

DATATYPES = {
    "BOOL": "bool",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP32": "<f4",
    "FP64": "<f8",
}


class Refused(Exception):
    """An error with a kind ferry-server maps to a reason or an HTTP status."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def read_frame(stream):
    (length,) = struct.unpack("<I", read_exact(stream, 4))
    header = json.loads(read_exact(stream, length))
    buffers = [read_exact(stream, n) for n in header.get("buffers", [])]
    return header, buffers


def write_frame(stream, header, buffers=()):
    buffers = [memoryview(b).cast("B") for b in buffers]
    header["buffers"] = [b.nbytes for b in buffers]
    data = json.dumps(header, separators=(",", ":")).encode()
    # A small reply leaves in one write (the stream is unbuffered): each write is a system call and a wake-up of
    # ferry-server.
    if sum(b.nbytes for b in buffers) <= SMALL_FRAME_BYTES:
        stream.write(b"".join([struct.pack("<I", len(data)), data, *buffers]))
    else:
        stream.write(struct.pack("<I", len(data)) + data)
        for b in buffers:
            stream.write(b)
    stream.flush()


def installed_versions():
    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package, distributions in PACKAGES.items():
        for distribution in distributions:
            try:
                versions[package] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
    return versions


def guarded(base, approved):
    """`base` (an Unpickler class) refusing every global outside `approved`."""

    class Guarded(base):
        def find_class(self, module, name):
            if (module, name) not in approved:
                raise Refused("unsafe", f"the pickle imports {module}.{name}, which the scan did not approve")
            return super().find_class(module, name)

    return Guarded


def spec(name, datatype, shape):
    return {"name": name, "datatype": datatype, "shape": shape}


def datatype_of(dtype):
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return "INT32" if dtype.itemsize <= 4 and dtype.kind == "i" else "INT64"
    if dtype.kind == "f":
        return "FP32" if dtype.itemsize <= 4 else "FP64"
    return "BYTES"


class Sklearn:
    def __init__(self, request):
        import numpy as np

        path = request["path"]
        approved = {tuple(g) for g in request.get("approved_globals", [])}
        if request.get("joblib"):
            from joblib import numpy_pickle

            numpy_pickle.NumpyUnpickler = guarded(numpy_pickle.NumpyUnpickler, approved)
            import joblib

            self.model = joblib.load(path)
        else:
            with open(path, "rb") as f:
                self.model = guarded(pickle.Unpickler, approved)(f).load()
        # The scan allowed every global; the object it built must also be a model of an allowed package, not a
        # framework helper holding a callable it would run at predict time.
        module = type(self.model).__module__
        roots = set(request.get("model_roots", []))
        if module.split(".")[0] not in roots:
            raise Refused(
                "unsafe",
                f"the pickle holds a {module}.{type(self.model).__qualname__}, not a model of {', '.join(sorted(roots))}",
            )
        if not hasattr(self.model, "predict"):
            raise Refused("load", f"the pickle holds a {type(self.model).__name__}, which has no predict method")
        features = getattr(self.model, "n_features_in_", None)
        self.inputs = [spec("input", "FP64", [-1, int(features) if features is not None else -1])]
        self.outputs = []
        classes = getattr(self.model, "classes_", None)
        if classes is not None and not isinstance(classes, list):
            self.outputs.append(spec("predict", datatype_of(np.asarray(classes).dtype), [-1]))
        else:
            targets = getattr(self.model, "n_outputs_", 1)
            self.outputs.append(spec("predict", "FP64", [-1] if targets == 1 else [-1, targets]))
        self.proba = classes is not None and hasattr(self.model, "predict_proba")
        if self.proba:
            self.outputs.append(spec("predict_proba", "FP64", [-1, len(classes)]))
        names = getattr(self.model, "feature_names_in_", None)
        self.info = {
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "feature_names": [str(n) for n in names] if names is not None else [],
            "classes": [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else [],
        }

    def predict(self, inputs):
        x = inputs["input"]
        outputs = {"predict": self.model.predict(x)}
        if self.proba:
            outputs["predict_proba"] = self.model.predict_proba(x)
        return outputs


class Xgboost:
    def __init__(self, request):
        import xgboost

        self.booster = xgboost.Booster()
        self.booster.load_model(request["path"])
        self.booster.set_param({"nthread": 1})
        config = json.loads(self.booster.save_config())["learner"]
        classes = int(config["learner_model_param"].get("num_class", "0"))
        objective = config["objective"]["name"]
        shape = [-1, classes] if objective == "multi:softprob" and classes > 1 else [-1]
        self.inputs = [spec("input", "FP32", [-1, self.booster.num_features()])]
        self.outputs = [spec("predict", "FP32", shape)]
        self.info = {"objective": objective, "feature_names": list(self.booster.feature_names or [])}

    def predict(self, inputs):
        return {"predict": self.booster.inplace_predict(inputs["input"], validate_features=False)}


class Lightgbm:
    def __init__(self, request):
        import lightgbm

        self.booster = lightgbm.Booster(model_file=request["path"])
        per_iteration = self.booster.num_model_per_iteration()
        self.inputs = [spec("input", "FP64", [-1, self.booster.num_feature()])]
        self.outputs = [spec("predict", "FP64", [-1] if per_iteration == 1 else [-1, per_iteration])]
        self.info = {"feature_names": self.booster.feature_name()}

    def predict(self, inputs):
        return {"predict": self.booster.predict(inputs["input"], num_threads=1)}


class Custom:
    """A custom model: `model.py` with a class `Model` (`load(path)`, `predict(inputs) -> outputs`)."""

    def __init__(self, request):
        directory = request["path"]
        signature = request.get("signature")
        if not signature:
            raise Refused("load", "a custom model needs signature.json beside model.py")
        sys.path.insert(0, directory)
        try:
            import model as module
        except Exception as e:
            raise Refused("load", f"importing model.py failed: {type(e).__name__}: {e}") from e
        if not hasattr(module, "Model"):
            raise Refused("load", "model.py defines no class Model")
        self.model = module.Model()
        self.model.load(directory)
        self.inputs = signature["inputs"]
        self.outputs = signature["outputs"]
        self.info = {}

    def predict(self, inputs):
        outputs = self.model.predict(inputs)
        if not isinstance(outputs, dict):
            raise Refused("internal", f"Model.predict returned a {type(outputs).__name__}, not a dict of arrays")
        return outputs


LOADERS = {"sklearn": Sklearn, "xgboost": Xgboost, "lightgbm": Lightgbm, "python": Custom}


def decode_inputs(header, buffers, model):
    import numpy as np

    declared = {s["name"]: s for s in model.inputs}
    inputs = {}
    for spec_, buffer in zip(header["inputs"], buffers):
        name, datatype, shape = spec_["name"], spec_["datatype"], spec_["shape"]
        if datatype == "BYTES":
            array = np.array(json.loads(buffer), dtype=object).reshape(shape)
        else:
            array = np.frombuffer(buffer, dtype=DATATYPES[datatype]).reshape(shape)
        if name not in declared:
            raise Refused("bad_input", f"the model has no input {name!r}")
        inputs[name] = array
    return inputs


def encode_outputs(outputs, model):
    import numpy as np

    specs, buffers = [], []
    for declared in model.outputs:
        name = declared["name"]
        if name not in outputs:
            raise Refused("internal", f"the model returned no output {name!r}")
        array = np.asarray(outputs[name])
        datatype = declared["datatype"]
        if datatype == "BYTES":
            data = json.dumps([str(v) for v in array.ravel().tolist()]).encode()
        else:
            data = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
        specs.append(spec(name, datatype, list(array.shape)))
        buffers.append(data)
    return specs, buffers


# How much lower than ferry-server's front the workers run. In a pod's CPU cgroup niceness only weighs the pod's
# own processes against each other: a version loading beside the serving one (imports take seconds of CPU) never
# starves the front that answers probes and requests, while the workers still get whatever the front leaves.
NICENESS = 5


def main():
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything the model or a framework prints goes to stderr, never into the protocol.
    sys.stdout = sys.stderr
    model = None
    while True:
        try:
            header, buffers = read_frame(stdin)
        except EOFError:
            return
        op = header.get("op")
        try:
            if op == "versions":
                write_frame(stdout, {"ok": installed_versions()})
            elif op == "load":
                loader = LOADERS.get(header.get("format"))
                if loader is None:
                    raise Refused("load", f"no Python loader for format {header.get('format')!r}")
                model = loader(header)
                write_frame(
                    stdout,
                    {"ok": {"inputs": model.inputs, "outputs": model.outputs, "info": model.info}},
                )
            elif op == "infer":
                if model is None:
                    raise Refused("internal", "no model is loaded")
                outputs = model.predict(decode_inputs(header, buffers, model))
                specs, data = encode_outputs(outputs, model)
                write_frame(stdout, {"ok": {"outputs": specs}}, data)
            else:
                raise Refused("internal", f"unknown operation {op!r}")
        except Refused as e:
            write_frame(stdout, {"error": {"kind": e.kind, "message": str(e)}})
        except (ValueError, TypeError, KeyError, IndexError) as e:
            kind = "bad_input" if op == "infer" else "load"
            write_frame(stdout, {"error": {"kind": kind, "message": f"{type(e).__name__}: {e}"}})
        except Exception as e:
            kind = "internal" if op == "infer" else "load"
            write_frame(stdout, {"error": {"kind": kind, "message": f"{type(e).__name__}: {e}"}})


if __name__ == "__main__":
    main()
