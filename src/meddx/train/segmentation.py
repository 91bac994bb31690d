"""Train a U-Net segmenter; the RUN folder mirrors the classifier's.

2D data (slices) are resized to the training size (predictions are resized back to the input's
geometry by `meddx.infer.Segmenter`). 3D volumes are normalised at native resolution, trained on random
patches (half of them centred on foreground) and predicted with `meddx.models.sliding_window`. Loss: soft Dice (or
Tversky) + binary cross-entropy on logits; AdamW + cosine decay; model selection on validation Dice.
RUN folder: model.keras, run.json (kind "segmenter", written last), history.csv,
training_curves.png, splits.csv, val_metrics.json.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meddx import __version__
from meddx.data.datasets import Dataset, describe, format_summary
from meddx.errors import ConfigError, DataError
from meddx.models.losses import SEGMENTATION_LOSSES
from meddx.models.sliding_window import sliding_window_predict
from meddx.train.config import (IMAGE_SEGMENTATION_DEFAULTS, SLICE_STACK_MAX_SIZE, SLICE_STACK_PATCH,
                                SLICE_STACK_SEGMENTATION_DEFAULTS, TrainConfig, auto_epochs, recorded_val_fraction,
                                with_defaults)
from meddx.train.seg_data import is_slice_stacks, load_segmentation_dataset, masks_at, read_pair
from meddx.train.seg_pipeline import patch_sequence, tf_dataset_2d
from meddx.transforms.post import dice_np

Log = Callable[[str], None]
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
SEG_CLASS_NAMES = ["background", "lesion"]


def train_segmenter(data: str | Path | Dataset, out: str | Path, cfg: TrainConfig | None = None,
                    overwrite: bool = False, log: Log | None = None, base_filters: int = 16, depth: int = 4,
                    verbose: int | str = "auto") -> dict[str, Any]:
    """Train a U-Net on image/mask pairs into the RUN folder `out`; returns run.json's content."""
    cfg = cfg or TrainConfig(task="segmentation")
    log = log or logging.getLogger("meddx").info
    options = dict(cfg.model_options or {})  # a config's model_options win over the arguments
    base_filters = int(options.pop("base_filters", base_filters))
    depth = int(options.pop("depth", depth))
    if options:
        raise ConfigError(f"model_options for a U-Net: base_filters, depth; unknown: {', '.join(sorted(options))}")
    model_name = "unet" if cfg.model in ("cnn", "unet") else cfg.model
    from meddx.models.registry import model_spec

    if not model_spec(model_name).is_segmentation:
        raise ConfigError(f"model '{cfg.model}' is a classifier; --task segmentation needs a segmentation model (unet)")
    run_dir = Path(out)
    from meddx.data.integrity import case_hashes, check_mask_shapes, check_no_duplicates, content_groups
    from meddx.train.fit import (_read_history, check_run_dir, claim_run_dir, configure_tensorflow, model_channels,
                                 write_run_folder)
    from meddx.transforms.prepare import materialise, probe_item

    # a finished RUN is refused before DATA is read; the folder is claimed only once DATA has been read and
    # checked and the model built, so a missing or malformed manifest leaves it as it was (--overwrite included)
    claim = check_run_dir(run_dir, overwrite, {**cfg.to_dict(), "base_filters": base_filters, "depth": depth,
                                               "data": str(getattr(data, "source", data))})
    ds = load_segmentation_dataset(data)
    check_mask_shapes(ds)  # a mask of another size than its image is an error, never resized to fit
    ndim, channels, native = probe_item(ds)
    stacks = ndim == 2 and is_slice_stacks(ds)  # the recipe (and with it the validation fraction) comes first
    cfg = with_defaults(cfg, SLICE_STACK_SEGMENTATION_DEFAULTS if stacks else IMAGE_SEGMENTATION_DEFAULTS)

    configure_tensorflow(cfg.threads, cfg.seed)
    import keras

    from meddx.data.splits import assign_splits
    from meddx.models.registry import build_model
    from meddx.transforms.preprocess import Preprocessing

    hashes = case_hashes(ds)  # copies of a case stay in one split; across source-given splits they are refused
    val_fraction = recorded_val_fraction(cfg)  # a config the recipe has not filled means the default
    splits = assign_splits(ds, val_fraction, cfg.test_fraction, cfg.seed, groups=content_groups(ds, hashes))
    check_no_duplicates(ds, splits, hashes, log)
    ds.extra["content_hashes"] = hashes
    summary = describe(ds, splits)
    log(format_summary(summary))
    tr, va = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    if len(tr) == 0 or (len(va) == 0 and val_fraction > 0):
        raise DataError(f"need train and val cases; got {len(tr)} train / {len(va)} val", ds.source)
    selecting = len(va) > 0  # a validation split picks the best epoch; without one the last epoch is kept
    if not selecting:
        log("no validation split (val_fraction 0" + (", the slice-stack recipe's" if stacks else "")
            + "): training the full schedule and keeping the last epoch")
    missing = sum(ds.masks[i] is None for i in range(len(ds)))  # type: ignore[index]
    if missing:
        log(f"note: {missing} case(s) without a mask are treated as all background")

    spec = model_spec(model_name)
    size = int(cfg.image_size or min(max(native), SLICE_STACK_MAX_SIZE if stacks else spec.default_size[ndim]))
    size -= size % 2 ** depth if size >= 2 ** depth else 0
    size = max(size, 2 ** depth)
    if cfg.patch_size is None:  # slice stacks: crops of large slices (other data is filled with 0 above)
        cfg = replace(cfg, patch_size=SLICE_STACK_PATCH if size >= 2 * SLICE_STACK_PATCH else 0)
    if stacks:
        log(f"slice stacks ({len(set(ds.patient_ids.tolist()))} patients): the slice-stack recipe for settings "
            f"not given (batch {cfg.batch_size}, learning rate {cfg.learning_rate:g}, size {size}, crops "
            f"{cfg.patch_size or 'none'}, lesion fade {cfg.lesion_fade:g}, stack post-processing "
            f"{cfg.stack_min_fraction:g}, intensity {cfg.intensity})")
    intensity = cfg.intensity or "minmax"
    prep = Preprocessing(spatial_ndim=ndim, image_size=size, channels=model_channels(cfg, channels),
                         intensity=intensity, select_channels=cfg.select_channels)
    patch = tuple([size] * ndim)
    batch = cfg.batch_size if ndim == 2 else max(1, min(cfg.batch_size, 2))
    log(f"preprocessing: {ndim}D, {'size' if ndim == 2 else 'patch'} {patch}, {prep.channels} channel(s), "
        f"intensity {intensity}")

    if ndim == 3 and (cfg.channel_dropout or cfg.lesion_fade or cfg.patch_size):
        raise ConfigError("channel_dropout, lesion_fade and patch_size are implemented for 2D segmentation only "
                          "(3D trains on patches of --size); this data is 3D")
    crop = _training_crop(cfg.patch_size, size, depth) if ndim == 2 else None
    masks_of = ds.masks  # type: ignore[assignment]
    if ndim == 2:
        x_tr = materialise(ds.subset(tr), prep)
        x_va = materialise(ds.subset(va), prep) if selecting else None
        y_tr = masks_at(ds.subset(tr), patch)
        y_va = masks_at(ds.subset(va), patch) if selecting else None
        steps = max(1, math.ceil(len(tr) / batch))
        train_data = tf_dataset_2d(x_tr, y_tr[..., None].astype(np.float32), batch, cfg.seed, cfg.augment,
                                    cfg.channel_dropout, cfg.lesion_fade, crop)
        val_pairs = None
    else:
        tr_pairs = [read_pair(ds.items[i], masks_of[i], prep, native=True)[:2] for i in tr]
        val_pairs = [read_pair(ds.items[i], masks_of[i], prep, native=True)[:2] for i in va]
        n_vox = sum(int(np.prod(v.shape[:3])) for v, _ in tr_pairs)
        steps = max(4, math.ceil(n_vox / (np.prod(patch) * batch)))
        train_data = patch_sequence([v for v, _ in tr_pairs], [m for _, m in tr_pairs], patch, batch, steps,
                                     cfg.seed, cfg.augment)
        x_va = y_va = None
    # slice stacks: ~1300 steps, 12-25 epochs (LGG: 25 epochs on 8 patients, 12 on 28, by patient-grouped CV)
    epochs = cfg.epochs or (auto_epochs(len(tr), batch, target_steps=1300, lo=12, hi=25) if stacks
                            else auto_epochs(len(tr), batch, target_steps=600, lo=10, hi=80))

    def unet(shape: tuple[int, ...]) -> Any:
        return build_model(model_name, (*shape, prep.channels), 2, task="binary", base_filters=base_filters,
                           depth=depth, dropout=min(cfg.dropout, 0.2))

    # trained on crops, the weights go into a whole-image copy to predict (a fixed-size model trains ~1.5x
    # faster on CPU than one with open spatial sides)
    model = unet((crop, crop) if crop else patch)
    whole = unet(patch) if crop else model
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=epochs * steps, alpha=0.01)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    model.compile(optimizer=optimizer, loss=SEGMENTATION_LOSSES[cfg.seg_loss], jit_compile=cfg.jit_compile)

    def val_dice() -> tuple[float, float]:
        """(pooled Dice over all val voxels -- the selection score, which an empty prediction cannot
        win -- and the mean per-case Dice over lesion-containing cases)."""
        if ndim == 2:
            if whole is not model:
                whole.set_weights(model.get_weights())
            logits = whole.predict(x_va, batch_size=32, verbose=0)[..., 0]
            preds, truths = logits > 0, y_va > 0
        else:
            preds = [sliding_window_predict(model, v, patch)[..., 0] > 0
                     for v, _ in val_pairs]  # type: ignore[union-attr]
            truths = [m for _, m in val_pairs]  # type: ignore[union-attr]
        inter = sum(int(np.logical_and(p, t).sum()) for p, t in zip(preds, truths))
        total = sum(int(p.sum()) + int(t.sum()) for p, t in zip(preds, truths))
        pooled = 1.0 if total == 0 else 2.0 * inter / total
        les = [dice_np(p, t) for p, t in zip(preds, truths) if t.any()]
        return float(pooled), float(np.mean(les)) if les else float("nan")

    from meddx.train.checkpoints import fit_resumable, make_checkpointer

    class ValDice(keras.callbacks.Callback):
        """val_dice (pooled over val cases; the selection score) and val_dice_lesion in the epoch logs."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs if logs is not None else {}
            if not selecting:  # nothing to select on: the last epoch is the model
                return
            d_all, d_les = val_dice()
            logs["val_dice"] = d_all
            logs["val_dice_lesion"] = d_les

    resuming = claim_run_dir(claim)
    # best weights, early stopping, time budget and the crash-safe per-epoch state (train/checkpoints.py);
    # without a validation split the last epoch is the best
    best = make_checkpointer(run_dir, "val_dice" if selecting else None, cfg.patience if selecting else None,
                             max_minutes=cfg.max_minutes)
    callbacks = [ValDice(), best]
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    if crop:
        log(f"training on random {crop}x{crop} crops of the {size}x{size} images (half of the lesion slices' "
            f"crops centred on lesion); predicting whole images")
    log(f"training {model_name} ({ndim}D, base {base_filters}, depth {depth}) for up to {epochs} epochs "
        f"({len(tr)} train / {len(va)} val cases, batch {batch}, {'resuming' if resuming else 'new run'}) -> {run_dir}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    train_seconds = fit_resumable(model, train_data, epochs, callbacks, verbose=verbose,
                                  steps_per_epoch=steps if ndim == 3 else None)

    # A clean copy (no custom loss / optimizer state) is what the RUN keeps: it loads with safe_mode.
    final = unet(patch)
    final.set_weights(model.get_weights())
    d_all, d_les = val_dice() if selecting else (float("nan"), float("nan"))
    info: dict[str, Any] = {
        "meddx_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "segmenter",
        "model": model_name,
        "model_options": {"base_filters": base_filters, "depth": depth},
        "task": "segmentation",
        "class_names": list(SEG_CLASS_NAMES),
        "positive_class": "lesion",
        "threshold": 0.5,
        "input_shape": [*patch, prep.channels],
        "spatial_ndim": ndim,
        "patch": list(patch) if ndim == 3 else None,
        "inference": "resize" if ndim == 2 else "sliding_window",
        "overlap": 0.5,
        "postprocess": {"min_size": 0 if ndim == 3 else 10, "keep_largest": None,
                        "stack_min_fraction": float(cfg.stack_min_fraction) if ndim == 2 else 0.0},
        "preprocessing": prep.get_config(),
        "config": {**cfg.to_dict(), "model": model_name, "task": "segmentation", "epochs": epochs,
                   "batch_size": batch},
        "epochs_run": len(_read_history(run_dir / "history.csv")),
        "best_epoch": int(best.best_epoch) + 1,
        "training_seconds": round(train_seconds, 1),
        "data": {"source": str(ds.source), "kind": ds.kind, "summary": summary},
        "val_metrics": {"dice": None if math.isnan(d_all) else d_all,
                        "dice_lesion": None if math.isnan(d_les) else d_les, "n": int(len(va)),
                        "resolution": "model input" if ndim == 2 else "native"},
    }
    from meddx.train.fingerprint import record_metadata

    record_metadata(info, ds, tr, log=log)  # the training envelope (no feature model for segmenters yet)
    write_run_folder(run_dir, ds, splits, final, info,
                     title=f"{model_name} segmentation on {Path(str(ds.source)).name}", log=log)
    log(f"done in {train_seconds / 60:.1f} min (best epoch {info['best_epoch']}/{info['epochs_run']}): "
        + (f"validation Dice {d_all:.4f} (lesion cases {d_les:.4f})" if selecting else "no validation split"))
    return info


def _training_crop(patch_size: int | None, size: int, depth: int) -> int | None:
    """The 2D training crop side for `patch_size` (None: whole images), checked against the image side."""
    if not patch_size or patch_size == size:
        return None
    if patch_size > size:
        raise ConfigError(f"patch_size {patch_size} is larger than the image size {size}; use a smaller patch or "
                          f"a larger --size")
    if patch_size % 2 ** depth:
        raise ConfigError(f"patch_size must be a multiple of {2 ** depth} (the U-Net's {depth} poolings), "
                          f"got {patch_size}")
    return patch_size
