"""The predictor base: a trained RUN held in memory (model, preprocessing, RunInfo), and `load` choosing its kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.io.run_info import RUN_FILE, RunInfo

MODEL_FILE = "model.keras"


class Predictor:
    """Base of Classifier / Segmenter / SequenceClassifier: load once, predict many (see `predict`)."""

    kind = ""

    def __init__(self, info: RunInfo, model: Any, preprocessing: Any, path: Path | None = None) -> None:
        self.info = info
        self.model = model
        self.preprocessing = preprocessing
        self.path = path

    @classmethod
    def load(cls, run_dir: str | Path, **options: Any) -> "Predictor":
        """The RUN in `run_dir` (checked to be of this predictor's kind), with `options` for the constructor."""
        info, model, prep, path = read_run(run_dir)
        if cls.kind and info.kind != cls.kind:
            raise InputError(f"is a {info.kind} RUN, not a {cls.kind}", path)
        return cls(info, model, prep, path, **options)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def threshold(self) -> float | None:
        return self.info.threshold

    @property
    def spatial_ndim(self) -> int:
        return int(self.info.spatial_ndim)

    def predict_logits(self, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Raw model outputs for a preprocessed batch, `batch_size` rows per model call. Keras models go through
        `predict_on_batch` (same traced function and outputs as `predict`, without building a tf.data pipeline
        per call: 624 28x28 images in chunks of 32 measured 0.2 s vs 7.6 s, loaded machine)."""
        if len(x) == 0:
            return np.zeros((0, self.model.output_shape[-1]), dtype=np.float32)
        on_batch = getattr(self.model, "predict_on_batch", None)
        if on_batch is None:  # an exported runtime (meddx.infer.runtimes)
            return np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0))
        return np.concatenate([np.asarray(on_batch(x[i: i + batch_size])) for i in range(0, len(x), batch_size)])

    def predict(self, image: Any) -> Any:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def predict_batch(self, images: Sequence[Any], **options: Any) -> list[Any]:
        """`predict` for each image (kinds that can batch the model call override this)."""
        return [self.predict(img, **options) for img in images]


def read_run_info(run_dir: str | Path) -> tuple[RunInfo, Path]:
    """(RunInfo, path) of a RUN folder, with one-line errors when the folder or its run.json is missing."""
    p = Path(run_dir)
    if not p.is_dir():
        raise InputError("RUN folder does not exist", p)
    if not (p / RUN_FILE).is_file():
        hint = " (training was interrupted? run `meddx train` again with the same --out to resume)" \
            if (p / "backup").is_dir() else ""
        raise InputError(f"not a meddx RUN folder: {RUN_FILE} is missing{hint}", p)
    return RunInfo.read(p), p


def load_keras_parts(info: RunInfo, p: Path) -> tuple[Any, Any]:
    """(Keras model loaded with safe_mode, Preprocessing) of a RUN whose run.json is `info`."""
    if not (p / MODEL_FILE).is_file():
        raise InputError(f"RUN folder lacks {MODEL_FILE}", p)
    from meddx.models.runtime import configure_tensorflow

    configure_tensorflow(inter_op=1)  # inference: measured fastest (benchmarks/threads.py)
    from meddx.models.registry import load_model
    from meddx.transforms.preprocess import Preprocessing

    try:
        model = load_model(p / MODEL_FILE)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot load {MODEL_FILE}: {exc}", p) from None
    try:
        prep = Preprocessing.from_config(info.preprocessing)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{RUN_FILE} has unusable preprocessing: {exc}", p) from None
    return model, prep


def read_run(run_dir: str | Path) -> tuple[RunInfo, Any, Any, Path]:
    """(RunInfo, Keras model loaded with safe_mode, Preprocessing, path) of a RUN folder; clear errors when
    it is incomplete."""
    info, p = read_run_info(run_dir)
    model, prep = load_keras_parts(info, p)
    return info, model, prep, p
