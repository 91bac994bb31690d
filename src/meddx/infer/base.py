"""The predictor base: a trained RUN held in memory (model, preprocessing, RunInfo), and `load` choosing its kind."""

from __future__ import annotations

import zipfile
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
            if (p / "backup").is_dir() or (p / "checkpoints").is_dir() else ""
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
    except (ValueError, OSError, TypeError, KeyError, AttributeError, zipfile.BadZipFile) as exc:
        # a damaged or hand-edited model.keras (safe_mode refuses code; Keras raises TypeError on a bad config)
        raise InputError(f"cannot load {MODEL_FILE}: {exc}", p) from None
    try:
        prep = Preprocessing.from_config(info.preprocessing)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{RUN_FILE} has unusable preprocessing: {exc}", p) from None
    check_run_matches_model(info, model, p)
    return model, prep


_TASKS = {"classifier": ("binary", "multiclass", "multilabel"), "sequence_classifier": ("binary", "multiclass"),
          "segmenter": ("binary", "segmentation")}  # run_info reads a segmenter's "segmentation" as binary


def check_run_matches_model(info: RunInfo, model: Any, p: Path) -> None:
    """run.json must describe the model it sits next to (task, class count vs output units, input size): a
    hand-edited or mismatched run.json would otherwise mislabel every prediction. One-line error naming it."""
    where = p / RUN_FILE
    task, names = info.task, info.class_names
    allowed = _TASKS.get(info.kind)
    if allowed and task not in allowed:
        raise InputError(f"task {task!r} is not one a {info.kind} has ({', '.join(allowed)})", where)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names) or len(names) < (1 if task == "multilabel" else 2):
        raise InputError(f"class_names {names!r} must be a list of at least two distinct names", where)
    if task == "binary" and info.kind != "segmenter" and len(names) != 2:
        raise InputError(f"a binary task has 2 class names, not {len(names)}", where)
    if not isinstance(info.input_shape, (list, tuple)):
        raise InputError(f"input_shape must be a list, got {info.input_shape!r}", where)
    try:
        out_shape = tuple(model.output_shape)
        in_shape = tuple(model.input_shape)
    except (AttributeError, ValueError, TypeError):  # several inputs/outputs: not a layout meddx writes
        raise InputError(f"model.keras has several inputs or outputs; {RUN_FILE} describes one", p) from None
    units = out_shape[-1]
    spatial_out = len(out_shape) == len(in_shape) and len(out_shape) > 2
    if info.kind == "segmenter" and not spatial_out:
        raise InputError(f"says segmenter but model.keras outputs {out_shape}, not a mask", where)
    if info.kind in ("classifier", "sequence_classifier") and len(out_shape) != 2:
        raise InputError(f"says {info.kind} but model.keras outputs {out_shape}, not class scores", where)
    if info.kind in ("classifier", "sequence_classifier"):
        want = 1 if task == "binary" else len(names)
        if units is not None and int(units) != want:
            raise InputError(f"{len(names)} class name(s), {task}: the model should have {want} output unit(s) "
                             f"but model.keras has {units}", where)
    elif info.kind == "segmenter" and units is not None and int(units) != 1:
        raise InputError(f"a segmenter's model should output 1 channel, model.keras outputs {units}", where)
    rec = list(info.input_shape or [])
    if rec:
        got = list(in_shape[1:])
        if len(got) != len(rec) or any(a is not None and b is not None and int(a) != int(b)
                                       for a, b in zip(got, rec)):
            raise InputError(f"input_shape {rec} does not match the model's input {got}", where)


def read_run(run_dir: str | Path) -> tuple[RunInfo, Any, Any, Path]:
    """(RunInfo, Keras model loaded with safe_mode, Preprocessing, path) of a RUN folder; clear errors when
    it is incomplete."""
    info, p = read_run_info(run_dir)
    model, prep = load_keras_parts(info, p)
    return info, model, prep, p
