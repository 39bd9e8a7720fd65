"""A custom model for ferry-server's Python runtime: a linear scorer whose weights ship beside this file.

The contract (see server-image/README.md, "Custom Python models"): the archive holds `model.py` with a class
`Model` that has `load(path)` and `predict(inputs) -> outputs`, and `signature.json` declaring both. `load` runs
once per worker process with the unpacked archive's directory; `predict` receives a dict of numpy arrays named
and shaped as the signature's inputs and returns a dict of numpy arrays named as its outputs.
"""

import os

import numpy as np


class Model:
    def load(self, path):
        self.weights = np.load(os.path.join(path, "weights.npy"))

    def predict(self, inputs):
        x = inputs["input"]
        score = x @ self.weights
        return {"score": score, "positive": (score > 0).astype(np.int64)}
