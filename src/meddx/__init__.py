"""meddx: medical image diagnosis with Keras 3 (TensorFlow backend).

The Python API, cheap to import (TensorFlow loads only when a model is built or loaded):

    import meddx
    ds = meddx.load_dataset("breastmnist_trainval.npz")
    clf = meddx.train(ds, epochs=20)                 # an in-memory predictor (RUN folder: out=...)
    meddx.evaluate(clf, ds, split="val")             # the numbers metrics.json holds
    clf.predict(meddx.read_image("case.png"))        # Prediction: probabilities, label, heatmap, lesions
    meddx.load("RUN")                                # a trained RUN folder's predictor

Layers, one way: cli -> app -> infer / report -> explain -> train -> evaluate -> models / transforms -> data -> io
(checked by import-linter; see pyproject.toml).
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

__version__ = "0.1.0"


class _CallablePackage(types.ModuleType):
    """`meddx.train` and `meddx.evaluate` are both subpackages and the API functions of the same names: calling
    the package runs `meddx.app.api.<name>` (so `meddx.train(data)` and `import meddx.train.fit` both work)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = import_module("meddx.app.api")
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


import meddx.evaluate  # noqa: E402  (cheap: numpy; scikit-learn and matplotlib load inside the functions)
import meddx.train  # noqa: E402  (an empty package)

for _name in ("meddx.train", "meddx.evaluate"):
    sys.modules[_name].__class__ = _CallablePackage

_API = {  # public name -> module that defines it (imported on first use)
    "read_image": "meddx.io",
    "Image": "meddx.io.image",
    "load_dataset": "meddx.data.datasets",
    "Dataset": "meddx.data.datasets",
    "TrainConfig": "meddx.train.config",
    "list_models": "meddx.models.registry",
    "load": "meddx.infer",
    "Prediction": "meddx.infer.prediction",
    "RunInfo": "meddx.io.run_info",
    "MeddxError": "meddx.errors",
}

__all__ = ["__version__", "train", "evaluate", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meddx' has no attribute {name!r}")
