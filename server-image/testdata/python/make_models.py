#!/usr/bin/env python3
"""Generates the Python-framework models and the predictions that ferry-server's Python runtime tests use.

Run with two virtual environments of its own: the runtime's packages (server-image/python/requirements.txt) plus
the MLflow that writes the MLflow layouts, and an older scikit-learn for the incompatible pickle:

    python3 -m venv ~/.cache/ferry/venv-models
    ~/.cache/ferry/venv-models/bin/pip install -r server-image/python/requirements.txt \
        mlflow-skinny==3.17.2 pandas==2.3.3
    python3 -m venv ~/.cache/ferry/venv-sklearn-old
    ~/.cache/ferry/venv-sklearn-old/bin/pip install scikit-learn==1.5.2 numpy==2.4.6
    ~/.cache/ferry/venv-models/bin/python server-image/testdata/python/make_models.py
    ~/.cache/ferry/venv-sklearn-old/bin/python server-image/testdata/python/make_models.py --old

Writes server-image/testdata/python/models/* and expected.json. The expectations are what each framework's own
`predict` (and `predict_proba`) return on the same rows, so a test compares ferry-server with the framework itself.
`--old` writes only `sklearn_old.joblib`, pickled by an older scikit-learn, which the runtime must refuse.
"""

import gzip
import io
import json
import pathlib
import pickle
import shutil
import sys
import tarfile
import tempfile
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MODELS = HERE / "models"
ROWS = 16


def dataset(n_features, n_classes, seed):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=400 + ROWS,
        n_features=n_features,
        n_informative=n_features - 1,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    # Rounded so that the JSON request carries exactly the numbers the framework saw.
    x = np.round(x, 3)
    return x[:-ROWS], y[:-ROWS], x[-ROWS:]


def outputs(named):
    """{name: array} as the expectation file stores them: datatype, shape and flat data."""
    result = {}
    for name, array in named.items():
        array = np.asarray(array)
        if array.dtype.kind in "iu":
            datatype, data = "INT64", [int(v) for v in array.ravel()]
        elif array.dtype.kind == "f":
            datatype = "FP32" if array.dtype == np.float32 else "FP64"
            data = [float(v) for v in array.ravel()]
        else:
            datatype, data = "BYTES", [str(v) for v in array.ravel()]
        result[name] = {"datatype": datatype, "shape": list(array.shape), "data": data}
    return result


def old_model():
    import joblib
    import sklearn
    from sklearn.linear_model import LogisticRegression

    x, y, _ = dataset(4, 2, 7)
    path = MODELS / "sklearn_old.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    print(f"{path.name}: scikit-learn {sklearn.__version__}")


def main():
    import joblib
    import lightgbm
    import mlflow.models
    import mlflow.sklearn
    import sklearn
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge

    MODELS.mkdir(exist_ok=True)
    expected = {}

    def record(name, file, fmt, rows, datatype, named):
        expected[name] = {
            "file": file,
            "format": fmt,
            "input": "input",
            "datatype": datatype,
            "rows": rows.tolist(),
            "outputs": outputs(named),
        }

    # scikit-learn: a linear classifier and a forest, each as joblib and as a plain pickle, and a regressor.
    x, y, rows = dataset(4, 2, 7)
    logreg = LogisticRegression(max_iter=500).fit(x, y)
    x3, y3, rows3 = dataset(6, 3, 11)
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(x3, y3)
    xr, yr, rowsr = dataset(5, 2, 5)
    ridge = Ridge().fit(xr, yr.astype(float) * 3.5 + xr[:, 0])
    for name, model, data in [("sklearn_logreg", logreg, rows), ("sklearn_forest", forest, rows3)]:
        joblib.dump(model, MODELS / f"{name}.joblib")
        with open(MODELS / f"{name}.pkl", "wb") as f:
            pickle.dump(model, f, protocol=5)
        named = {"predict": model.predict(data), "predict_proba": model.predict_proba(data)}
        record(name, f"{name}.joblib", "sklearn", data, "FP64", named)
        record(f"{name}_pickle", f"{name}.pkl", "sklearn", data, "FP64", named)
    # A retrained logistic regression (stronger regularisation): same signature, other answers.
    retrained = LogisticRegression(C=0.05, max_iter=500).fit(x, y)
    joblib.dump(retrained, MODELS / "sklearn_logreg_v2.joblib")
    named = {"predict": retrained.predict(rows), "predict_proba": retrained.predict_proba(rows)}
    record("sklearn_logreg_v2", "sklearn_logreg_v2.joblib", "sklearn", rows, "FP64", named)
    joblib.dump(ridge, MODELS / "sklearn_ridge.joblib")
    record("sklearn_ridge", "sklearn_ridge.joblib", "sklearn", rowsr, "FP64", {"predict": ridge.predict(rowsr)})

    # XGBoost: a binary classifier saved as JSON, a multiclass one as UBJSON, both through the Booster.
    xb, yb, rowsb = dataset(5, 2, 3)
    binary = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(xb, label=yb, feature_names=[f"f{i}" for i in range(5)]),
        num_boost_round=20,
    )
    binary.save_model(MODELS / "xgboost_binary.json")
    record(
        "xgboost_binary", "xgboost_binary.json", "xgboost", rowsb, "FP32",
        {"predict": binary.inplace_predict(rowsb.astype(np.float32))},
    )
    # Retrained with more, deeper trees: the same signature, other answers.
    retrained_binary = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 5, "nthread": 1},
        xgboost.DMatrix(xb, label=yb, feature_names=[f"f{i}" for i in range(5)]),
        num_boost_round=40,
    )
    retrained_binary.save_model(MODELS / "xgboost_binary_v2.json")
    record(
        "xgboost_binary_v2", "xgboost_binary_v2.json", "xgboost", rowsb, "FP32",
        {"predict": retrained_binary.inplace_predict(rowsb.astype(np.float32))},
    )
    multi = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(x3, label=y3),
        num_boost_round=15,
    )
    multi.save_model(MODELS / "xgboost_multiclass.ubj")
    record(
        "xgboost_multiclass", "xgboost_multiclass.ubj", "xgboost", rows3, "FP32",
        {"predict": multi.inplace_predict(rows3.astype(np.float32))},
    )

    # LightGBM: a binary classifier in the text format.
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 8, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(xb, label=yb),
        num_boost_round=20,
    )
    booster.save_model(MODELS / "lightgbm_binary.txt")
    record("lightgbm_binary", "lightgbm_binary.txt", "lightgbm", rowsb, "FP64", {"predict": booster.predict(rowsb)})

    # MLflow: the logistic regression saved with mlflow.sklearn (its MLmodel, requirements and pickle), archived.
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp) / "model"
        signature = mlflow.models.infer_signature(x, logreg.predict(x))
        mlflow.sklearn.save_model(logreg, directory, serialization_format="pickle", signature=signature)
        archive(directory, MODELS / "mlflow_sklearn.tar.gz")
    named = {"predict": logreg.predict(rows), "predict_proba": logreg.predict_proba(rows)}
    record("mlflow_sklearn", "mlflow_sklearn.tar.gz", "mlflow", rows, "FP64", named)

    # MLflow's XGBoost flavor (model.ubj) and LightGBM flavor (a Booster: model.lgb, the text format).
    import mlflow.lightgbm
    import mlflow.xgboost

    for name, save, model, predict, datatype in [
        ("mlflow_xgboost", mlflow.xgboost.save_model, binary,
         lambda r: binary.inplace_predict(r.astype(np.float32)), "FP32"),
        ("mlflow_lightgbm", mlflow.lightgbm.save_model, booster, booster.predict, "FP64"),
    ]:
        with tempfile.TemporaryDirectory() as tmp:
            directory = pathlib.Path(tmp) / "model"
            save(model, directory, signature=mlflow.models.infer_signature(xb, predict(xb)))
            archive(directory, MODELS / f"{name}.tar.gz")
        record(name, f"{name}.tar.gz", "mlflow", rowsb, datatype, {"predict": predict(rowsb)})

    # A custom Python model: the sample's code and a weights file, archived as a user would ship it.
    sample = HERE.parent.parent.parent / "e2e" / "samples" / "python-model"
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp) / "model"
        shutil.copytree(sample, directory, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        np.save(directory / "weights.npy", np.array([0.5, -1.0, 2.0, 0.25]))
        archive(directory, MODELS / "custom_python.tar.gz")
        sys.path.insert(0, str(directory))
        import model as custom

        instance = custom.Model()
        instance.load(str(directory))
        named = instance.predict({"input": rows})
        sys.path.pop(0)
    record("custom_python", "custom_python.tar.gz", "python", rows, "FP64", named)

    # Archives that must be refused: a member that climbs out of the directory, and a link that points outside.
    with reproducible_tar_gz(MODELS / "zip_slip.tar.gz") as tar:
        add_bytes(tar, "model/MLmodel", b"flavors: {}\n")
        add_bytes(tar, "../../escaped.txt", b"outside\n")
    with zipfile.ZipFile(MODELS / "zip_slip.zip", "w") as z:
        for name, text in [("model.py", ""), ("../../escaped.txt", "outside\n")]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    with reproducible_tar_gz(MODELS / "link_out.tar.gz") as tar:
        add_bytes(tar, "model.py", b"")
        link = tarfile.TarInfo("weights.npy")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)

    versions = {
        "scikit-learn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "lightgbm": lightgbm.__version__,
        "numpy": np.__version__,
    }
    (HERE / "expected.json").write_text(json.dumps({"versions": versions, "models": expected}, indent=1) + "\n")
    print(f"wrote {len(expected)} expectations with {versions}")


class reproducible_tar_gz:
    """A .tar.gz opened for writing whose gzip header has no time, so the same members give the same bytes."""

    def __init__(self, path):
        self.file = open(path, "wb")
        self.gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self.file, mtime=0)
        self.tar = tarfile.open(fileobj=self.gzip, mode="w", format=tarfile.GNU_FORMAT)

    def __enter__(self):
        return self.tar

    def __exit__(self, *exc):
        self.tar.close()
        self.gzip.close()
        self.file.close()


def archive(directory, path):
    """A .tar.gz of `directory`'s files at the archive's root, in a stable order."""
    with reproducible_tar_gz(path) as tar:
        for file in sorted(directory.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                info = tar.gettarinfo(file, arcname=str(file.relative_to(directory)))
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(file, "rb") as f:
                    tar.addfile(info, f)


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    old_model() if "--old" in sys.argv else main()
