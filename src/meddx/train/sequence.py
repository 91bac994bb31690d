"""Train a sequence classifier into a RUN folder: studies (video, cine, DICOM multi-frame, slice stacks) ->
sampled frames, each preprocessed as a 2D image -> a registry sequence model (`lstm`, `gru`, `tcn`,
`transformer`, `cnn25d`) -> the RUN `meddx.infer.SequenceClassifier` predicts with.

The recipe is the classifiers' (`meddx.train.fit`): patient-grouped splits, balanced class weights, AdamW with a
cosine schedule, best-validation-AUC weights, a Youden threshold for binary tasks, crash-safe checkpoints (an
interrupted run resumes) and a wall-clock budget. Frames are sampled and preprocessed by
`meddx.transforms.frames.sequence_input`, the function the predictor uses, so training and inference agree.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meddx import __version__
from meddx.data.datasets import Dataset, describe, format_summary, load_dataset
from meddx.data.sequences import pad_sequences
from meddx.errors import ConfigError, DataError, naming
from meddx.models.runtime import configure_tensorflow
from meddx.train.config import CLASSIFIER_DEFAULTS, TrainConfig, auto_epochs, class_weights_for, with_defaults
from meddx.train.fit import (_make_callbacks, _read_history, check_run_dir, claim_run_dir, class_sample_weights,
                             encode_labels, make_tf_dataset, model_channels, split_cases, write_run_folder,
                             compile_model, fit_model, log_done, threshold_prior, validation_results)
from meddx.transforms.frames import check_frames, read_study, sequence_input

LOGGER = logging.getLogger("meddx")
DEFAULT_SEQUENCE_MODEL = "lstm"
SEQUENCE_BUILDERS = "meddx.models.sequence:"  # where the registry's sequence models are built
MIN_STEPS_PER_EPOCH = 8  # the batch shrinks (below cfg.batch_size) so small sets still take several steps


def sequence_model_names() -> tuple[str, ...]:
    """Registry names of the sequence models (`meddx.models.sequence.SEQUENCE_MODELS`), read without Keras."""
    from meddx.models.registry import list_models, model_spec

    return tuple(n for n in list_models() if str(model_spec(n).builder).startswith(SEQUENCE_BUILDERS))


STILL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})  # always one 2D image (TIFF may hold pages)


def study_kind(item: Any) -> str | None:
    """"sequence" (a video, or a folder of slice images), "image" (a PNG/JPEG/BMP file: one 2D image), or None
    when the name alone does not tell (DICOM, NIfTI, TIFF ...: the reader decides). Reads no pixels."""
    from meddx.io.readers import RASTER_SUFFIXES
    from meddx.io.video import VIDEO_SUFFIXES

    if isinstance(item, np.ndarray):
        return None
    p = Path(item)
    if p.is_dir():
        try:
            slices = any(c.is_file() and c.suffix.lower() in RASTER_SUFFIXES for c in p.iterdir())
        except OSError:
            return None
        return "sequence" if slices else None
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "sequence"
    return "image" if suffix in STILL_SUFFIXES else None


def check_one_kind(ds: Dataset) -> None:
    """DataError naming DATA when its cases mix sequences (videos, slice folders) and single images (PNG/JPEG):
    a model trains on one or the other. Decided from the names, before anything is read or written."""
    first: dict[str, Any] = {}
    for item in ds.items:
        kind = study_kind(item)
        if kind is None or kind in first:
            continue
        first[kind] = item
        if len(first) == 2:
            raise DataError(f"mixes sequences and single images ({first['sequence']} is a video or slice folder, "
                            f"{first['image']} a single image); train a sequence model on the sequences and an "
                            "image model on the images, from separate manifests", ds.source)


def is_sequence_study(data: str | Path | Dataset) -> bool:
    """True when DATA's first case is a frame sequence (video, cine, 4D series); npz data never are."""
    if not isinstance(data, Dataset) and Path(data).suffix.lower() == ".npz":
        return False
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    if not ds.items or isinstance(ds.items[0], np.ndarray):
        return False
    with naming(ds.items[0]):
        return bool(read_study(ds.items[0]).is_sequence)


def choose_sequence_model(data: str | Path | Dataset, requested: str | None,
                          log: Callable[[str], None] | None = None) -> str | None:
    """The sequence model to train: `requested` when it is one; the default when none was requested and the
    data are sequences; None (train an image classifier) otherwise. DataError when DATA mixes sequences and
    single images (`check_one_kind`), whichever model was requested."""
    is_npz = not isinstance(data, Dataset) and Path(data).suffix.lower() == ".npz"
    ds = None if is_npz else (data if isinstance(data, Dataset) else load_dataset(data))
    if ds is not None:
        check_one_kind(ds)
    if requested is not None:
        return requested if requested in sequence_model_names() else None
    if ds is None or not is_sequence_study(ds):
        return None
    (log or LOGGER.info)(f"sequence data: using --model {DEFAULT_SEQUENCE_MODEL} (default for sequences)")
    return DEFAULT_SEQUENCE_MODEL


def check_sequence_config(cfg: TrainConfig) -> None:
    """ConfigError unless `cfg` asks for a sequence model on a classification task."""
    names = sequence_model_names()
    if cfg.model not in names:
        raise ConfigError(f"model '{cfg.model}' is not a sequence model (choose one of {', '.join(names)})")
    if cfg.task != "classification":
        raise ConfigError("sequence models classify whole studies; --task segmentation is not available for them")
    if cfg.model == "cnn25d" and cfg.frame_sampling == "all":
        raise ConfigError("cnn25d needs a fixed number of frames: use --frame-sampling uniform")
    if cfg.members not in (None, 1):
        raise ConfigError("--members (ensembles) is implemented for image classifiers; sequence models train one model")


def sequence_preprocessing(ds: Dataset, cfg: TrainConfig) -> Any:
    """The 2D per-frame `Preprocessing`, sized from the first study and the model's registry default."""
    from meddx.models.registry import model_spec
    from meddx.transforms.preprocess import Preprocessing

    if isinstance(ds.items[0], np.ndarray):
        raise DataError("sequence models read studies from files (videos, DICOM, NIfTI, slice folders); "
                        "in-memory arrays are not supported", ds.source)
    with naming(ds.items[0]):
        first = read_study(ds.items[0])
        check_frames(first)
    native = tuple(int(s) for s in first.spatial_shape[-2:])  # (y, x) of a frame; a video stays undecoded
    size = cfg.image_size or min(max(native), model_spec(cfg.model).default_size[3])
    return Preprocessing(spatial_ndim=2, image_size=size, channels=model_channels(cfg, first.n_channels),
                         intensity=cfg.intensity or "minmax", select_channels=cfg.select_channels)


def read_sequences(ds: Dataset, idx: np.ndarray, prep: Any, cfg: TrainConfig) -> np.ndarray:
    """(N, T, H, W, C) model input of the studies `idx` (sampling "all": zero-padded to the longest)."""
    seqs = []
    for i in idx:
        with naming(ds.items[i]):
            x, _, _ = sequence_input(read_study(ds.items[i]), prep, cfg.frames, cfg.frame_sampling)
        seqs.append(x)
    if not seqs:
        return np.zeros((0, cfg.frames, *prep.output_shape), np.float32)
    return pad_sequences(seqs)[0].astype(np.float32, copy=False)


def batch_size_for(n_train: int, cfg: TrainConfig) -> int:
    """cfg.batch_size, made smaller when needed so an epoch takes at least MIN_STEPS_PER_EPOCH steps."""
    return int(max(2, min(cfg.batch_size, math.ceil(n_train / MIN_STEPS_PER_EPOCH))))


def run_description(cfg: TrainConfig, ds: Dataset, prep: Any, shape: tuple[Any, ...], epochs: int,
                    batch: int, run_dir: Path) -> dict[str, Any]:
    """run.json's fields known before validation (kind, model, labels, preprocessing, sequence sampling)."""
    return {
        "meddx_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "sequence_classifier", "model": cfg.model, "task": ds.task, "class_names": ds.class_names,
        "positive_class": ds.class_names[1] if ds.task == "binary" else None,
        "input_shape": list(shape), "spatial_ndim": 2, "preprocessing": prep.get_config(),
        "model_options": dict(cfg.model_options or {}),
        "config": {**cfg.to_dict(), "epochs": epochs, "batch_size": batch},
        "epochs_run": len(_read_history(run_dir / "history.csv")),
        "sequence": {"frames": cfg.frames, "sampling": cfg.frame_sampling, "frame_size": int(prep.image_size[0])},
    }


def train_sequence_classifier(data: str | Path | Dataset, out: str | Path, cfg: TrainConfig | None = None,
                              overwrite: bool = False, log: Callable[[str], None] | None = None,
                              verbose: int | str = "auto") -> dict[str, Any]:
    """Train `cfg.model` (a sequence model) on DATA's studies into the RUN folder `out`; returns run.json's dict."""
    log = log or LOGGER.info
    cfg = with_defaults(cfg or TrainConfig(model=DEFAULT_SEQUENCE_MODEL), CLASSIFIER_DEFAULTS)
    check_sequence_config(cfg)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    check_one_kind(ds)
    run_dir = Path(out)
    # refused (a finished RUN) before any study is read; claimed once every study has been read and the
    # model built, so a damaged video leaves the folder as it was
    claim = check_run_dir(run_dir, overwrite, {**cfg.to_dict(), "data": str(getattr(data, "source", data))})
    configure_tensorflow(cfg.threads, cfg.seed)
    if ds.task == "multilabel":
        raise ConfigError("sequence models support binary and multi-class labels, not multi-label", ds.source)
    cfg = replace(cfg, class_weights=class_weights_for(cfg, default=True))  # run.json records what was used
    splits, tr, va = split_cases(ds, cfg, log)
    summary = describe(ds, splits)
    log(format_summary(summary, cfg.class_weights))
    prep = sequence_preprocessing(ds, cfg)
    log(f"frames: {cfg.frame_sampling}" + (f" ({cfg.frames} per study)" if cfg.frame_sampling == "uniform" else "")
        + f", each {prep.image_size[0]} px, {prep.output_shape[-1]} channel(s), intensity {prep.intensity}")
    t_read = time.monotonic()
    x_tr, x_va = read_sequences(ds, tr, prep, cfg), read_sequences(ds, va, prep, cfg)
    log(f"read {len(tr) + len(va)} studies in {time.monotonic() - t_read:.0f} s")
    y_all = encode_labels(ds)
    y_tr, y_va = y_all[tr], y_all[va]

    batch = batch_size_for(len(tr), cfg)
    steps = max(1, math.ceil(len(tr) / batch))
    epochs = cfg.epochs or auto_epochs(len(tr), batch, target_steps=300, lo=10, hi=60)
    shape = (cfg.frames if cfg.frame_sampling == "uniform" else None, *prep.output_shape)
    model, _ = compile_model(replace(cfg, members=1), shape, ds, epochs, steps)
    from meddx.transforms.augment import Augmenter

    # the one preset table (transforms/augment.py): every frame of a study gets the same draw
    augmenter = None if cfg.augment == "none" else Augmenter.from_preset(cfg.augment, 2, seed=cfg.seed)
    weights = class_sample_weights(y_tr, ds.task) if cfg.class_weights else None
    from meddx.train.checkpoints import EpochOrder

    order = EpochOrder(len(x_tr), cfg.seed)  # epoch-keyed order and augmentation: a resumed run replays exactly
    train_ds = make_tf_dataset(x_tr, y_tr, batch, cfg.seed, augmenter, sample_weight=weights, sequences=True,
                               order=order)
    resuming = claim_run_dir(claim)
    log(f"training {cfg.model} for up to {epochs} epochs ({len(tr)} train / {len(va)} val studies, batch {batch}, "
        f"augment {cfg.augment}, {'resuming' if resuming else 'new run'}) -> {run_dir}")
    callbacks = _make_callbacks(run_dir, x_va, y_va, ds.task, cfg.patience, cfg.max_minutes, batch, order=order)
    seconds = fit_model(model, train_ds, epochs, callbacks, verbose, run_dir)

    threshold, val_metrics = validation_results(model, x_va, ds, va, cfg, batch_size=16,
                                                prior=threshold_prior(cfg, ds, tr))
    info = run_description(cfg, ds, prep, shape, epochs, batch, run_dir)
    info.update(threshold=threshold, best_epoch=int(callbacks[1].best_epoch) + 1, training_seconds=round(seconds, 1),
                data={"source": str(ds.source), "kind": ds.kind, "summary": summary}, val_metrics=val_metrics)
    from meddx.train.fingerprint import record_metadata

    record_metadata(info, ds, tr, max_items=20, log=log)  # the training envelope (videos: a few are enough)
    write_run_folder(run_dir, ds, splits, model, info, title=f"{cfg.model} on {Path(str(ds.source)).name}", log=log)
    log_done(info, seconds, log)
    return info
