"""Train a classifier into a RUN folder: data -> preprocessing -> tf.data -> Keras fit -> metrics.

The RUN folder holds everything `evaluate`/`predict`/`report` need: `model.keras`,
`run.json` (config, preprocessing, labels, threshold, data summary, validation metrics),
`history.csv`, `training_curves.png`, `val_metrics.json` and `splits.csv`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meddx import __version__
from meddx.data.datasets import Dataset, describe, format_summary, load_dataset
from meddx.transforms.prepare import materialise, probe_item
from meddx.data.splits import assign_splits
from meddx.errors import ConfigError, DataError
from meddx.models.outputs import logits_to_probs
from meddx.models.runtime import configure_tensorflow
from meddx.train.config import (CLASSIFIER_DEFAULTS, ENSEMBLE_MAX_MINUTES, TrainConfig, auto_epochs, class_weights_for,
                                 ensemble_members, recorded_val_fraction, with_defaults)
from meddx.utils import atomic_path, atomic_write_json, atomic_write_text

LOGGER = logging.getLogger("meddx")
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"


def default_intensity(ds: Dataset) -> str:
    """8-bit arrays are scaled by 1/255 (MedMNIST); files are min-max normalised per image."""
    if ds.items and isinstance(ds.items[0], np.ndarray) and ds.items[0].dtype == np.uint8:
        return "scale255"
    return "minmax"


def model_channels(cfg: TrainConfig, data_channels: int) -> int:
    """Channels the model sees: `cfg.channels`, else the selected channels, else the data's."""
    return cfg.channels or (len(cfg.select_channels) if cfg.select_channels else data_channels)


def build_preprocessing(ds: Dataset, cfg: TrainConfig) -> Any:
    """Preprocessing chosen from the data and the model's registry entry."""
    from meddx.models.registry import model_spec
    from meddx.transforms.preprocess import Preprocessing

    ndim, channels, native = probe_item(ds)
    spec = model_spec(cfg.model)
    if ndim not in spec.dims:
        raise ConfigError(f"model '{cfg.model}' has no {ndim}D variant; the data are {ndim}D ({ds.source})")
    size = cfg.image_size or min(max(native), spec.default_size[ndim])
    return Preprocessing(spatial_ndim=ndim, image_size=size, channels=model_channels(cfg, channels),
                         intensity=cfg.intensity or default_intensity(ds), select_channels=cfg.select_channels)


def encode_labels(ds: Dataset) -> np.ndarray:
    """Targets as Keras expects them for logits: (N,1) float for binary, ints for multiclass."""
    if ds.task == "binary":
        return ds.labels.astype(np.float32).reshape(-1, 1)
    if ds.task == "multilabel":
        return ds.labels.astype(np.float32)
    return ds.labels.astype(np.int32)


def validation_auc(y: np.ndarray, probs: np.ndarray, task: str) -> float:
    from meddx.evaluate.classification import macro_auc_ovr, multilabel_auc, roc_auc

    if task == "binary":
        return float(roc_auc(y.reshape(-1), probs[:, 1]))
    if task == "multilabel":
        return float(multilabel_auc(y, probs))
    return float(macro_auc_ovr(y.astype(int), probs))


def class_weight_dict(y: np.ndarray, task: str) -> dict[int, float] | None:
    """Balanced weights n / (k * n_c) for single-label tasks."""
    if task == "multilabel":
        return None
    labels = y.reshape(-1).astype(int)
    counts = np.bincount(labels)
    k = int((counts > 0).sum())
    return {c: float(len(labels) / (k * n)) for c, n in enumerate(counts) if n > 0}


def _make_callbacks(run_dir: Path, x_val: np.ndarray, y_val: np.ndarray, task: str, patience: int,
                    max_minutes: float | None, batch_size: int, order: Any | None = None,
                    predict_model: Any | None = None) -> list[Any]:
    """[validation scores, checkpointer]; `predict_model` (an ensemble's inference graph) scores validation when the
    model being fitted outputs something else (the members' logits)."""
    import keras

    class ValidationScore(keras.callbacks.Callback):
        """Adds val_auc, val_acc and val_score (AUC, ties broken by accuracy) to the epoch logs."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs if logs is not None else {}
            logits = (predict_model or self.model).predict(x_val, batch_size=256, verbose=0)
            probs = logits_to_probs(logits, task)
            auc = validation_auc(y_val, probs, task)
            if task == "multilabel":
                acc = float(((probs >= 0.5) == (y_val > 0.5)).mean())
            else:
                acc = float((probs.argmax(axis=1) == y_val.reshape(-1).astype(int)).mean())
            auc = 0.5 if math.isnan(auc) else auc
            logs["val_auc"] = auc
            logs["val_acc"] = acc
            logs["val_score"] = auc + 0.01 * acc

    from meddx.train.checkpoints import make_checkpointer

    # best weights, early stopping, time budget and the crash-safe per-epoch state in one place
    # (train/checkpoints.py); it sits at index 1 and exposes `best_epoch` (0-based)
    callbacks = [
        ValidationScore(),
        make_checkpointer(run_dir, "val_score", patience, order=order, max_minutes=max_minutes),
    ]
    return callbacks


def make_tf_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augmenter: Any | None,
                    sample_weight: np.ndarray | None = None, sequences: bool = False, order: Any | None = None) -> Any:
    """Shuffled, batched, augmented, prefetched tf.data pipeline over in-memory arrays.

    The order of each epoch and each batch's augmentation draw come from (seed, epoch) through `order`
    (an `EpochOrder`, advanced by the checkpoint callback), so a resumed run trains on exactly the batches an
    uninterrupted one would. `sample_weight` (N,) rides along as a third element: class balancing precomputed
    once (cheaper than Keras's per-batch `class_weight` lookup, benchmarks/training_throughput.py).
    `sequences`: x is (N, T, *spatial, C) and each sequence's frames are augmented alike.
    """
    import tensorflow as tf

    from meddx.train.checkpoints import EpochOrder

    order = order if order is not None else EpochOrder(len(x), seed, auto=True)
    w = None if sample_weight is None else np.asarray(sample_weight, np.float32).reshape(-1)
    lead = 2 if sequences else 1
    nsp = x.ndim - lead - 1
    xshape: list[Any] = [None, *x.shape[1:]]
    if augmenter is not None:
        xshape = [None, *augmenter.output_shape(xshape[1:], nsp)] if sequences else augmenter.output_shape(xshape, nsp)
    n_batches = max(1, math.ceil(len(x) / batch_size))

    def _indices() -> tuple[np.ndarray, np.ndarray]:
        epoch = order.take()
        perm = order.permutation(epoch)
        return perm, np.full(len(perm), epoch, np.int64)

    def _gather(b: np.ndarray, idx: np.ndarray, ep: np.ndarray) -> tuple[np.ndarray, ...]:
        xb = x[idx]
        if augmenter is not None:
            rng = order.rng(int(ep[0]), int(b))
            xb = augmenter.apply_sequences(xb, rng=rng) if sequences else augmenter(xb, rng=rng)
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        return (xb, y[idx]) if w is None else (xb, y[idx], w[idx])

    out_types = [tf.float32, tf.as_dtype(y.dtype)] + ([tf.float32] if w is not None else [])

    @tf.autograph.experimental.do_not_convert
    def _map(b: Any, batch: Any) -> Any:
        idx, ep = batch
        res = tf.numpy_function(_gather, [b, idx, ep], out_types, stateful=False, name="meddx_batch")
        res[0].set_shape(xshape)
        res[1].set_shape([None, *y.shape[1:]])
        if w is not None:
            res[2].set_shape([None])
        return tuple(res)

    ds = tf.data.Dataset.range(1).flat_map(lambda _: tf.data.Dataset.from_tensor_slices(
        tuple(tf.numpy_function(_indices, [], [tf.int64, tf.int64], stateful=True))))
    ds = ds.batch(batch_size).enumerate().map(_map, num_parallel_calls=1, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def class_sample_weights(y: np.ndarray, task: str) -> np.ndarray | None:
    """Per-case weights from `class_weight_dict` (None for multilabel, which has no single class)."""
    cw = class_weight_dict(y, task)
    if cw is None:
        return None
    labels = y.reshape(-1).astype(int)
    return np.asarray([cw[int(c)] for c in labels], dtype=np.float32)


RESUME_FILE = "resume.json"  # the settings a run started with; an interrupted run resumes only with these
RESUME_FREE = ("max_minutes", "threads", "patience")  # settings a resumed run may change


def _clear_run_dir(run_dir: Path) -> None:
    for name in (RUN_FILE, MODEL_FILE, "history.csv", "val_metrics.json", RESUME_FILE, "ood.npz"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


@dataclass(frozen=True)
class RunClaim:
    """What `check_run_dir` decided for a RUN folder; nothing is written until `claim_run_dir` carries it out."""

    run_dir: Path
    resuming: bool  # an interrupted run with the same settings: training continues from its checkpoint
    clear: bool  # --overwrite: the finished (or mismatched interrupted) run there is removed when claimed
    settings: dict[str, Any]  # written to resume.json when a new run starts


def check_run_dir(run_dir: Path, overwrite: bool, settings: dict[str, Any]) -> RunClaim:
    """Decide, writing nothing, whether training resumes, starts afresh or is refused: a finished run is
    refused without `overwrite`; an interrupted run started with other `settings` (the run's configuration)
    is refused too, or with `overwrite` started again. Call it before reading DATA (a refusal
    costs nothing) and `claim_run_dir` after DATA passed its checks (bad data then leaves the folder as it was)."""
    clear = False
    for folder in (run_dir, *run_dir.parents):  # the nearest existing one must be a folder to make RUN in
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{folder}: is a file, not a folder; --out names the RUN folder to write")
            break
    if (run_dir / RUN_FILE).exists():
        if not overwrite:
            raise ConfigError(f"{run_dir}: already holds a trained model (run.json); use another --out or --overwrite")
        clear, resuming = True, False
    else:
        from meddx.train.checkpoints import CheckpointStore

        resuming = CheckpointStore(run_dir).exists() or (run_dir / "backup").is_dir()
    now = {k: v for k, v in json.loads(json.dumps(settings, default=str)).items() if k not in RESUME_FREE}
    if resuming:
        try:
            before = json.loads((run_dir / RESUME_FILE).read_text())
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            before = None
        if before != now:
            what = ("its settings are not recorded" if before is None else "it was started with other settings: "
                    + ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(now) | set(before))
                                if before.get(k) != now.get(k)))
            if not overwrite:
                raise ConfigError(f"{run_dir}: holds an interrupted run that cannot be resumed ({what}); "
                                  "use the same settings, another --out, or --overwrite to start again")
            clear, resuming = True, False
    return RunClaim(run_dir, resuming, clear, now)


def claim_run_dir(claim: RunClaim) -> bool:
    """Carry out `check_run_dir`'s decision (clear what --overwrite replaces, make the folder, record the
    settings in resume.json for the next check); True when resuming."""
    if claim.clear:
        _clear_run_dir(claim.run_dir)
    if not claim.resuming:
        claim.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(claim.run_dir / RESUME_FILE, claim.settings)
    return claim.resuming


def train(data: str | Path | Dataset, out: str | Path, cfg: TrainConfig | None = None, overwrite: bool = False,
          log: Callable[[str], None] | None = None, verbose: int | str = "auto",
          extra_callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train `cfg.model` on DATA into the RUN folder `out`; returns the run info (run.json)."""
    log = log or LOGGER.info
    cfg = with_defaults(cfg or TrainConfig(), CLASSIFIER_DEFAULTS)  # run.json records what was used
    run_dir = Path(out)
    # a finished RUN is refused before DATA is read; the folder is claimed only once DATA has been read
    # and checked and the model built, so bad data or options leave it as it was (--overwrite included)
    claim = check_run_dir(run_dir, overwrite, {**cfg.to_dict(), "data": str(getattr(data, "source", data))})
    from meddx.train.devices import make_strategy

    dist = make_strategy(cfg.devices)  # first: logical CPU devices must exist before TensorFlow initialises
    configure_tensorflow(cfg.threads, cfg.seed)
    from meddx.models.registry import model_spec
    from meddx.transforms.augment import Augmenter

    ds = data if isinstance(data, Dataset) else load_dataset(data)
    if model_spec(cfg.model).is_segmentation:
        raise ConfigError(f"model '{cfg.model}' is a segmentation network; use --task segmentation")
    cfg = replace(cfg, class_weights=class_weights_for(cfg, default=False))  # run.json records what was used
    splits, tr, va = split_cases(ds, cfg, log)
    summary = describe(ds, splits)
    log(format_summary(summary, cfg.class_weights))

    prep = build_preprocessing(ds, cfg)
    log(f"preprocessing: {prep.spatial_ndim}D, size {tuple(prep.output_shape[:-1])}, "
        f"{prep.output_shape[-1]} channel(s), intensity {prep.intensity}")
    x_all = materialise(ds.subset(np.concatenate([tr, va])), prep)
    x_tr, x_va = x_all[: len(tr)], x_all[len(tr):]
    y_all = encode_labels(ds)
    y_tr, y_va = y_all[tr], y_all[va]
    cfg = resolve_members(cfg, prep.output_shape, len(tr))  # run.json records what was used

    # 3D: half the optimiser steps (AdrenalMNIST3D peaked by epoch 8-10 of 16 or 32; 16 measured 0.836 val AUC)
    epochs = cfg.epochs or auto_epochs(len(tr), cfg.batch_size, target_steps=600 if prep.spatial_ndim == 2 else 300)
    batch = cfg.batch_size * dist.replicas  # --batch-size per device; learning rate linear in the global batch
    steps = max(1, math.ceil(len(tr) / batch))
    with dist.scope():
        model, fitted = compile_model(replace(cfg, learning_rate=cfg.learning_rate * dist.replicas, devices=None),
                                      prep.output_shape, ds, epochs, steps)

    augmenter = None if cfg.augment == "none" else Augmenter.from_preset(cfg.augment, prep.spatial_ndim, seed=cfg.seed)
    weights = class_sample_weights(y_tr, ds.task) if cfg.class_weights else None
    from meddx.train.checkpoints import EpochOrder

    order = EpochOrder(len(x_tr), cfg.seed)  # data order and augmentation keyed by epoch: resumes replay exactly
    train_ds = make_tf_dataset(x_tr, y_tr, batch, cfg.seed, augmenter, sample_weight=weights, order=order)
    resuming = claim_run_dir(claim)
    what = cfg.model if cfg.members == 1 else f"an ensemble of {cfg.members} {cfg.model} models side by side"
    log(f"training {what} for up to {epochs} epochs ({len(tr)} train / {len(va)} val cases, "
        f"batch {batch}{f' over {dist.replicas} devices' if dist.replicas > 1 else ''}, "
        f"{'resuming' if resuming else 'new run'}) -> {run_dir}")
    callbacks = _make_callbacks(run_dir, x_va, y_va, ds.task, cfg.patience, cfg.max_minutes, cfg.batch_size,
                                order=order, predict_model=model if fitted is not model else None)
    callbacks += list(extra_callbacks or [])
    train_seconds = fit_model(fitted, train_ds, epochs, callbacks, verbose, run_dir)
    best = callbacks[1]

    # Operating point and validation metrics from the selected (best) weights.
    threshold, val_metrics = validation_results(model, x_va, ds, va, cfg, prior=threshold_prior(cfg, ds, tr))
    info: dict[str, Any] = {
        "meddx_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "classifier",
        "model": cfg.model,
        "task": ds.task,
        "class_names": ds.class_names,
        "positive_class": ds.class_names[1] if ds.task == "binary" else None,
        "threshold": threshold,
        "input_shape": list(prep.output_shape),
        "spatial_ndim": prep.spatial_ndim,
        "preprocessing": prep.get_config(),
        "config": {**cfg.to_dict(), "epochs": epochs},
        "epochs_run": len(_read_history(run_dir / "history.csv")),
        "best_epoch": int(best.best_epoch) + 1,
        "training_seconds": round(train_seconds, 1),
        "data": {"source": str(ds.source), "kind": ds.kind, "summary": summary},
        "val_metrics": val_metrics,
        "distribution": dist.record(cfg.batch_size, cfg.learning_rate),
    }
    from meddx.train.fingerprint import fingerprint_into

    fingerprint_into(info, run_dir, model, ds, tr, va, x_tr, x_va, log)
    write_run_folder(run_dir, ds, splits, model, info, title=f"{cfg.model} on {Path(str(ds.source)).name}", log=log)
    log_done(info, train_seconds, log)
    return info


def resolve_members(cfg: TrainConfig, input_shape: tuple[int, ...], n_train: int) -> TrainConfig:
    """`cfg` with its ensemble size decided (`ensemble_members`); an ensemble chosen by default also gets a time
    budget (ENSEMBLE_MAX_MINUTES unless --max-minutes is given), so the default recipe keeps to its 10 minutes on a
    slower machine: training stops cleanly with the best epoch so far."""
    members = ensemble_members(cfg, input_shape, n_train)
    budget = cfg.max_minutes
    if cfg.members is None and members > 1 and budget is None:
        budget = ENSEMBLE_MAX_MINUTES
    return replace(cfg, members=members, max_minutes=budget)


def log_done(info: dict[str, Any], seconds: float, log: Callable[[str], None]) -> None:
    """The closing line of a classifier's training (time, best epoch, validation AUC with CI and accuracy), then
    the validation's caveats."""
    vm = info["val_metrics"]
    auc, ci = vm.get("auc"), vm.get("auc_ci")
    auc_text = "n/a" if auc is None else f"{auc:.4f}"
    if auc is not None and ci and None not in ci:
        auc_text += f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]"
    log(f"done in {seconds / 60:.1f} min (best epoch {info['best_epoch']}/{info['epochs_run']}): validation AUC "
        f"{auc_text}, accuracy {vm.get('accuracy'):.4f}")
    for warning in vm.get("warnings") or []:  # e.g. one validation patient: no CI across patients
        log(f"validation caveat: {warning}")


def compile_model(cfg: TrainConfig, shape: tuple[Any, ...], ds: Dataset, epochs: int,
                  steps: int) -> tuple[Any, Any]:
    """(the registry model, the model to fit): AdamW + cosine decay and a from-logits cross-entropy (label-smoothed
    with `cfg.label_smoothing`). The two are one object, except for an ensemble (`cfg.members` > 1), which fits
    its members' logits on each member's own cross-entropy (models/ensemble.py). Image-classifier training
    (`train`) handles `cfg.devices` itself; other trainers reaching here with it set are refused."""
    import keras

    from meddx.models.ensemble import member_loss, training_view
    from meddx.models.registry import build_model

    if cfg.devices:
        raise ConfigError("--devices is implemented for image classifiers only; train this model on one device")
    options = {"dropout": cfg.dropout, **(cfg.model_options or {})}
    members = cfg.members or 1
    model = build_model(cfg.model, shape, ds.n_classes, task=ds.task, members=members, **options)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=epochs * steps, alpha=0.01)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    if members > 1 or cfg.label_smoothing:
        loss = member_loss(members, ds.task, cfg.label_smoothing)
    elif ds.task == "multiclass":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
    fitted = training_view(model)
    fitted.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.jit_compile)
    return model, fitted


def threshold_prior(cfg: TrainConfig, ds: Dataset, tr: np.ndarray) -> float:
    """Where Youden's point lies for calibrated probabilities before any validation data: 0.5 after class-balanced
    training (`cfg.class_weights` resolved), else the training prevalence of the positive class."""
    return 0.5 if cfg.class_weights else float(np.mean(ds.labels[tr] == 1))


def validation_results(model: Any, x_va: np.ndarray, ds: Dataset, va: np.ndarray, cfg: TrainConfig,
                       batch_size: int = 256, prior: float = 0.5) -> tuple[float | None, dict[str, Any]]:
    """(Operating threshold for binary tasks else None, validation metrics at that threshold). The threshold is
    `robust_threshold`: bootstrap-median Youden shrunk toward `prior` when the validation split is small, so 78
    validation cases cannot push it to 0.98 (`prior`: `threshold_prior`)."""
    from meddx.evaluate.classification import classification_metrics, robust_threshold

    probs = logits_to_probs(model.predict(x_va, batch_size=batch_size, verbose=0), ds.task)
    y = ds.labels[va]
    threshold = (float(robust_threshold(y, probs[:, 1], prior=prior, seed=cfg.seed))
                 if ds.task == "binary" else None)
    groups = ds.patient_ids[va] if ds.patient_ids is not None else None
    metrics = classification_metrics(y, probs, ds.class_names, task=ds.task,
                                     threshold=0.5 if threshold is None else threshold, groups=groups, seed=cfg.seed)
    return threshold, metrics


def fit_model(model: Any, train_ds: Any, epochs: int, callbacks: list[Any], verbose: int | str, run_dir: Path) -> float:
    """`model.fit` resumed from the RUN's checkpoint (train/checkpoints.py); one line per epoch when not on a
    terminal. Returns the training seconds (summed over resumed attempts)."""
    from meddx.train.checkpoints import fit_resumable

    (run_dir / "checkpoints").mkdir(exist_ok=True)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    return fit_resumable(model, train_ds, epochs, callbacks, verbose=verbose, shuffle=False)


def split_cases(ds: Dataset, cfg: TrainConfig, log: Callable[[str], None]) -> tuple[np.ndarray, ...]:
    """(split name per case, train indices, validation indices), patient-grouped; data without a validation split
    (an npz with only train) get one carved from train; both classes must be in each."""
    from meddx.data.integrity import case_hashes, check_classes, check_no_duplicates, content_groups

    check_classes(ds, None, cfg.allow_rare_classes)  # malformed labels and tiny classes, before splitting them
    hashes = case_hashes(ds)  # copies of a case are kept in one split, or refused across source-given splits
    groups = content_groups(ds, hashes)
    val_fraction = recorded_val_fraction(cfg)  # a config the recipe has not filled means the default
    splits = assign_splits(ds, val_fraction, cfg.test_fraction, cfg.seed, groups=groups)
    tr, va = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    if len(va) == 0:
        from meddx.data.splits import _holdout, _strata

        va = np.sort(_holdout(_strata(ds), groups, tr, val_fraction, cfg.seed))
        splits[va] = "val"
        tr = np.setdiff1d(tr, va)
        log(f"no validation split in the data: held out {len(va)} training cases for validation")
    check_no_duplicates(ds, splits, hashes, log)
    ds.extra["content_hashes"] = hashes  # recorded in splits.csv: evaluate refuses test copies of these
    check_classes(ds, splits, cfg.allow_rare_classes)
    tr, va = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    _check_both_classes(ds, tr, "train")
    _check_both_classes(ds, va, "val")
    return splits, tr, va


def write_run_folder(run_dir: Path, ds: Dataset, splits: np.ndarray, model: Any, info: dict[str, Any],
                     title: str, log: Callable[[str], None] | None = None) -> None:
    """Write splits.csv, val_metrics.json, model.keras and the training curve, then run.json (a `RunInfo`) last;
    `info` is updated in place to what run.json holds (schema 2), which the trainers return."""
    from meddx.io.run_info import RunInfo

    log = log or LOGGER.info
    run_info = RunInfo.from_dict(info)  # checked before anything is written
    _write_splits(run_dir / "splits.csv", ds, splits)
    atomic_write_json(run_dir / "val_metrics.json", info["val_metrics"])
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    try:
        from meddx.evaluate.plots import plot_training_curves

        plot_training_curves(run_dir / "history.csv", run_dir / "training_curves.png", title=title)
    except Exception as exc:  # a plot must never lose a trained model
        log(f"warning: could not plot training curves: {exc}")
    run_info.write(run_dir)  # last: its presence marks a complete RUN
    info.clear()
    info.update(run_info.to_dict())
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def _check_both_classes(ds: Dataset, idx: np.ndarray, name: str) -> None:
    if ds.task == "multilabel" or len(idx) == 0:
        return
    present = np.unique(ds.labels[idx])
    if len(present) < 2:
        raise DataError(f"the {name} split holds only class {ds.class_names[int(present[0])]!r}; "
                        f"need at least two classes", ds.source)


def _read_history(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_splits(path: Path, ds: Dataset, splits: np.ndarray) -> None:
    """Which case went to which split (item names only; no patient identifiers beyond the manifest's own)."""
    names = ds.item_names()
    hashes = ds.extra.get("content_hashes")
    if hashes is None or len(hashes) != len(ds):
        from meddx.data.integrity import case_hashes

        hashes = case_hashes(ds)
    lines = ["item,label,split" + (",patient_id" if ds.patient_ids is not None else "") + ",sha256"]
    for i, (n, s) in enumerate(zip(names, splits)):
        label = ds.class_names[int(ds.labels[i])] if ds.task != "multilabel" else "|".join(
            c for c, v in zip(ds.class_names, ds.labels[i]) if v)
        row = [n, label, s] + ([str(ds.patient_ids[i])] if ds.patient_ids is not None else []) + [hashes[i]]
        lines.append(",".join('"' + c.replace('"', '""') + '"' if "," in c else c for c in row))
    atomic_write_text(path, "\n".join(lines) + "\n")
