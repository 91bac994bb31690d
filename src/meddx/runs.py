"""A trained RUN folder: the model, its preprocessing, labels, threshold and metrics together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import InputError
from meddx.utils import read_json

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"


@dataclass
class Run:
    """What `evaluate`, `predict` and `report` need from a RUN folder."""

    path: Path
    info: dict[str, Any]
    model: Any
    preprocessing: Any

    @property
    def task(self) -> str:
        return self.info["task"]

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def threshold(self) -> float | None:
        return self.info.get("threshold")

    @property
    def spatial_ndim(self) -> int:
        return int(self.info["spatial_ndim"])

    def predict_logits(self, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.model.output_shape[-1]), dtype=np.float32)
        return np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0))

    def predict_proba(self, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """(N, K) class probabilities (binary: [1 - p, p])."""
        from meddx.train.fit import logits_to_probs

        return logits_to_probs(self.predict_logits(x, batch_size), self.task)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Predicted class index per row, using the run's operating threshold for binary tasks."""
        if self.task == "binary":
            t = 0.5 if self.threshold is None else self.threshold
            return (probs[:, 1] >= t).astype(int)
        return probs.argmax(axis=1)


def load_run(path: str | Path) -> Run:
    """Open a RUN folder written by `meddx train`; clear errors when it is incomplete."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("RUN folder does not exist", p)
    if not (p / RUN_FILE).is_file():
        hint = " (training was interrupted? run `meddx train` again with the same --out to resume)" \
            if (p / "backup").is_dir() else ""
        raise InputError(f"not a meddx RUN folder: {RUN_FILE} is missing{hint}", p)
    if not (p / MODEL_FILE).is_file():
        raise InputError(f"RUN folder lacks {MODEL_FILE}", p)
    info = read_json(p / RUN_FILE)
    from meddx.train.fit import configure_tensorflow

    configure_tensorflow(inter_op=1)  # inference: measured fastest (benchmarks/threads.py)
    from meddx.models.registry import load_model
    from meddx.transforms.preprocess import Preprocessing

    try:
        model = load_model(p / MODEL_FILE)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot load {MODEL_FILE}: {exc}", p) from None
    prep = Preprocessing.from_config(info["preprocessing"])
    return Run(path=p, info=info, model=model, preprocessing=prep)
