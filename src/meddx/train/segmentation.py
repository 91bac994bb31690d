"""Train, evaluate and apply a U-Net segmenter; the RUN folder mirrors the classifier's.

2D data (slices) are resized to the training size and predictions resized back to the input's
geometry. 3D volumes are normalised at native resolution, trained on random patches (half of
them centred on foreground) and predicted with `sliding_window_predict`. Loss: soft Dice (or
Tversky) + binary cross-entropy on logits; AdamW + cosine decay; model selection on validation Dice.
RUN folder: model.keras, run.json (kind "segmenter", written last), history.csv,
training_curves.png, splits.csv, val_metrics.json.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meddx import __version__
from meddx.data.datasets import Dataset, describe, format_summary
from meddx.errors import ConfigError, DataError, InputError, naming
from meddx.train.config import TrainConfig, auto_epochs
from meddx.utils import atomic_path, atomic_write_json

Log = Callable[[str], None]
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
SEG_CLASS_NAMES = ["background", "lesion"]


# -- data ------------------------------------------------------------------------------

def load_segmentation_dataset(data: str | Path | Dataset) -> Dataset:
    """DATA for segmentation: a Dataset, a manifest with a `mask` column, or a paired folder."""
    if isinstance(data, Dataset):
        ds = data
    else:
        from meddx.data.datasets import load_dataset
        from meddx.data.lgg import is_paired_folder, paired_folder_dataset

        p = Path(data)
        if not p.exists():
            raise InputError("no such file or folder", p)
        ds = paired_folder_dataset(p) if is_paired_folder(p) else load_dataset(p)
    if ds.masks is None or not any(m is not None for m in ds.masks):
        raise DataError("segmentation needs masks: a manifest `mask` column or image/<name>_mask pairs", ds.source)
    if ds.kind == "npz":
        raise DataError("segmentation from .npz is not supported; use a manifest with a mask column", ds.source)
    return ds


def _read_pair(image_path: str, mask_path: str | None, prep: Any, native: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """(normalised image, binary mask in the image's geometry, Image) for one case."""
    from meddx.io import read_image

    img = read_image(image_path)
    spatial = tuple(int(s) for s in img.spatial_shape)
    if mask_path is None:
        truth = np.zeros(spatial, dtype=bool)
    else:
        m = np.asarray(read_image(mask_path).array)
        if m.ndim > len(spatial):
            m = m.max(axis=-1)
        if m.shape != spatial:
            raise InputError(f"mask shape {m.shape} differs from its image's {spatial}", mask_path)
        truth = m > 0
    x = _native_prep(prep, spatial)(img) if native else prep(img)
    return x, truth, img


def _native_prep(prep: Any, spatial: Sequence[int]) -> Any:
    """The run's preprocessing without resizing (3D volumes keep their native grid)."""
    from meddx.transforms.preprocess import Preprocessing

    cfg = dict(prep.get_config())
    cfg.update(image_size=list(spatial), spacing=None, crop=None, fit="stretch")
    return Preprocessing.from_config(cfg)


def _spacing_of(img: Any) -> tuple[float, ...] | None:
    """Physical spacing when the file carries geometry (plain PNG/TIFF pixels are unitless)."""
    known = img.has_geometry or any(s != 1.0 for s in img.spacing[: img.spatial_ndim])
    return tuple(float(s) for s in img.spacing[: img.spatial_ndim]) if known else None


def _resize(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(shape):
        return arr
    return resize(arr, tuple(shape), order=order, anti_aliasing=False, preserve_range=True)


# -- model pieces ----------------------------------------------------------------------

def _bce_plus_overlap_loss(y_true: Any, y_pred: Any, overlap: Callable[..., Any], lesion_only: bool = False) -> Any:
    """Binary cross-entropy from logits + (1 - per-sample `overlap(p, y_true, axes)`) averaged over the samples,
    or with `lesion_only` over the samples that contain lesion (none: the overlap term is 0)."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=True))
    axes = tuple(range(1, len(y_pred.shape)))
    miss = 1.0 - overlap(ops.sigmoid(y_pred), y_true, axes)
    if not lesion_only:
        return bce + ops.mean(miss)
    has = ops.cast(ops.sum(y_true, axis=axes) > 0, "float32")
    return bce + ops.sum(miss * has) / ops.maximum(ops.sum(has), 1.0)


def _soft_dice(p: Any, t: Any, axes: tuple[int, ...]) -> Any:
    """Smoothed soft Dice of probabilities `p` and truth `t` over `axes` (1 for two empty maps)."""
    from keras import ops

    return (2.0 * ops.sum(p * t, axis=axes) + 1.0) / (ops.sum(p + t, axis=axes) + 1.0)


def dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice (per sample, smoothed) + binary cross-entropy, from logits."""
    return _bce_plus_overlap_loss(y_true, y_pred, _soft_dice)


def lesion_dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy on every sample + soft Dice averaged over the samples that contain lesion only.

    A lesion-free slice scores Dice 1 / (1 + sum p) per sample: with mostly empty slices that term outweighs the
    lesions and can collapse training to all-background; here empty slices are taught by cross-entropy alone."""
    return _bce_plus_overlap_loss(y_true, y_pred, _soft_dice, lesion_only=True)


def batch_dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy + one soft Dice over all the batch's pixels together (nnU-Net's "batch Dice").

    Per-sample Dice scores a lesion-free crop 1 / (1 + sum p): any probability mass there costs almost the whole
    term, which teaches a network to stay near 0 wherever it is unsure (faint lesions); pooled over the batch a
    false alarm costs in proportion to its size, as in the Dice being measured."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=True))
    axes = tuple(range(len(y_pred.shape)))
    return bce + 1.0 - _soft_dice(ops.sigmoid(y_pred), y_true, axes)


def tversky_bce_loss(y_true: Any, y_pred: Any, alpha: float = 0.3, beta: float = 0.7) -> Any:
    """Soft Tversky (per sample; beta > alpha weighs missed lesion above false alarm) + binary cross-entropy."""
    from keras import ops

    def tversky(p: Any, t: Any, axes: tuple[int, ...]) -> Any:
        tp = ops.sum(p * t, axis=axes)
        fp = ops.sum(p * (1.0 - t), axis=axes)
        fn = ops.sum((1.0 - p) * t, axis=axes)
        return (tp + 1.0) / (tp + alpha * fp + beta * fn + 1.0)

    return _bce_plus_overlap_loss(y_true, y_pred, tversky)


SEGMENTATION_LOSSES = {"dice_bce": dice_bce_loss, "lesion_dice_bce": lesion_dice_bce_loss,
                       "batch_dice_bce": batch_dice_bce_loss,
                       "tversky_bce": tversky_bce_loss}


def sliding_window_predict(model: Any, volume: np.ndarray, patch: Sequence[int], overlap: float = 0.5,
                           batch_size: int = 4) -> np.ndarray:
    """Logits over a (*spatial, C) array by averaging overlapping `patch`-sized windows.

    Inputs smaller than the patch are padded (edge values) and the result cropped back.
    Returns (*spatial, units) float32.
    """
    vol = np.asarray(volume, dtype=np.float32)
    n = len(patch)
    spatial = vol.shape[:n]
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    pad = [max(0, p - s) for p, s in zip(patch, spatial)]
    if any(pad):
        vol = np.pad(vol, [(0, q) for q in pad] + [(0, 0)] * (vol.ndim - n), mode="edge")
    shape = vol.shape[:n]
    starts = []
    for s, p in zip(shape, patch):
        stride = max(1, int(round(p * (1 - overlap))))
        pos = list(range(0, s - p + 1, stride))
        if pos[-1] != s - p:
            pos.append(s - p)
        starts.append(pos)
    corners = list(itertools.product(*starts))
    acc: np.ndarray | None = None
    weight = np.zeros(shape, dtype=np.float32)
    for b in range(0, len(corners), batch_size):
        chunk = corners[b: b + batch_size]
        x = np.stack([vol[tuple(slice(c, c + p) for c, p in zip(cs, patch))] for cs in chunk])
        y = np.asarray(model.predict(x, verbose=0) if hasattr(model, "predict") else model(x), dtype=np.float32)
        if acc is None:
            acc = np.zeros((*shape, y.shape[-1]), dtype=np.float32)
        for cs, yi in zip(chunk, y):
            sl = tuple(slice(c, c + p) for c, p in zip(cs, patch))
            acc[sl] += yi
            weight[sl] += 1.0
    assert acc is not None
    out = acc / weight[..., None]
    return out[tuple(slice(0, s) for s in spatial)]


def postprocess_mask(mask: np.ndarray, min_size: int = 0, keep_largest: int | None = None) -> np.ndarray:
    """Drop connected components smaller than `min_size` voxels; optionally keep the largest k."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any() or (min_size <= 1 and keep_largest is None):
        return m
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim)
    lab, k = ndimage.label(m, structure=structure)
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    sizes[0] = 0
    keep = sizes >= max(1, min_size)
    if keep_largest is not None:
        order = np.argsort(-sizes)
        largest = np.zeros_like(keep)
        largest[order[: int(keep_largest)]] = True
        keep &= largest
    keep[0] = False
    return keep[lab]


def postprocess_stacks(masks: Sequence[np.ndarray], patients: Sequence[str], names: Sequence[str],
                       min_fraction: float) -> tuple[list[np.ndarray], int]:
    """Slice masks of one patient stacked in natural name order (slice 2 before slice 10): drop the 3D
    connected components (26-connected) with fewer voxels than `min_fraction` of that patient's largest.

    A 2D model sees one slice at a time; a lesion spans neighbouring slices, a false alarm on FLAIR-bright
    tissue mostly does not. Returns (masks in the input order, the number of patients left as they were
    because their slices differ in shape: counted, not named, as patient IDs stay out of logs)."""
    from meddx.data.lgg import natural_key

    out = [np.asarray(m, dtype=bool) for m in masks]
    skipped = 0
    if min_fraction <= 0:
        return out, skipped
    patients = np.asarray([str(p) for p in patients])
    for patient in sorted(set(patients)):
        idx = sorted(np.flatnonzero(patients == patient), key=lambda i: natural_key(Path(str(names[i]))))
        if len({out[i].shape for i in idx}) > 1 or out[idx[0]].ndim != 2:
            skipped += 1
            continue
        volume = drop_minor_components(np.stack([out[i] for i in idx]), min_fraction)
        for z, i in enumerate(idx):
            out[i] = volume[z]
    return out, skipped


def stack_min_fraction(run: Any) -> float:
    """The RUN's stack post-processing fraction (0: off; runs trained before the option have none)."""
    return float((run.info.get("postprocess") or {}).get("stack_min_fraction") or 0.0)


def drop_minor_components(volume: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep the 26-connected components of a (slices, H, W) mask with at least `min_fraction` of the largest's
    voxels: the lesion that runs through neighbouring slices stays, one-slice false alarms go."""
    from scipy import ndimage

    m = np.asarray(volume, dtype=bool)
    if min_fraction <= 0 or not m.any():
        return m
    lab, k = ndimage.label(m, structure=ndimage.generate_binary_structure(3, 3))
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    sizes[0] = 0
    keep = sizes >= min_fraction * sizes.max()
    keep[0] = False
    return keep[lab]


def _dice_np(p: np.ndarray, t: np.ndarray) -> float:
    s = p.sum() + t.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(p, t).sum() / s)


# -- training --------------------------------------------------------------------------

def _flip_axes(augment: str, ndim: int) -> list[int]:
    """Spatial axes (of one sample) flipped at random: 'flip' = left-right only; light/strong = all."""
    if augment == "none":
        return []
    if augment == "flip":
        return [ndim - 1]
    return list(range(ndim))


# preset -> (max degrees, max zoom fraction, max shift as a fraction of the side, channel contrast/brightness jitter)
AFFINE_2D = {"light": (10.0, 0.1, 0.05, 0.1), "strong": (20.0, 0.2, 0.1, 0.25)}


def _random_affine_2d(ab: Any, degrees: float, zoom: float, size: tuple[int, int], shift: float = 0.0) -> Any:
    """Rotate, zoom and shift one (H, W, C) tensor about its centre (bilinear, zeros outside); the shift
    keeps a network from learning where lesions usually sit in the few training patients."""
    import tensorflow as tf

    theta = tf.random.uniform((), -degrees, degrees) * math.pi / 180.0
    scale = tf.random.uniform((), 1.0 - zoom, 1.0 + zoom)
    h, w = float(size[0]), float(size[1])
    ty, tx = tf.unstack(tf.random.uniform((2,), -shift, shift) * tf.constant([h, w]))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    # output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotation/zoom about the centre, then a shift
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy - tx, sin, cos, cy - sin * cx - cos * cy - ty,
                          0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=ab[None], transforms=transform[None], output_shape=tf.constant(size, tf.int32),
        interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)
    return out[0]


LESION_FADE_MAX = 0.9  # --lesion-fade cuts a lesion's contrast by a random fraction up to this


def _fade_lesion(img: Any, msk: Any, amount: Any) -> Any:
    """Shift the lesion's mean intensity (per channel) `amount` of the way towards the tissue in a
    ring around it, keeping its texture and softening the edge: a faint version of a visible lesion."""
    import tensorflow as tf

    def mean_over(weights: Any) -> Any:
        return tf.reduce_sum(img * weights, axis=[0, 1]) / tf.maximum(tf.reduce_sum(weights, axis=[0, 1]), 1.0)

    def box_mean(k: int) -> Any:  # k x k mean as two 1-D passes (same values; TF's 2-D pooling is slow on CPU)
        rows = tf.nn.avg_pool2d(msk[None], ksize=[1, k], strides=1, padding="SAME")
        return tf.nn.avg_pool2d(rows, ksize=[k, 1], strides=1, padding="SAME")[0]

    soft = box_mean(5)  # zero everywhere without a lesion
    near = box_mean(15)
    tissue = img > tf.reduce_min(img, axis=[0, 1], keepdims=True) + 1e-3  # not the background
    ring = tf.cast((near > 0) & (msk < 0.5) & tissue, img.dtype)
    has_ring = tf.cast(tf.reduce_sum(ring) > 0, img.dtype)
    return img - amount * has_ring * soft * (mean_over(tf.cast(msk > 0.5, img.dtype)) - mean_over(ring))


def _random_crop_2d(img: Any, msk: Any, patch: int, lesion_p: float = 0.5) -> tuple[Any, Any]:
    """A (patch, patch) crop of one (H, W, C) image and its (H, W, 1) mask: with probability `lesion_p`
    (when there is lesion) centred on a random lesion pixel, else at a uniformly random place."""
    import tensorflow as tf

    h, w = tf.shape(img)[0], tf.shape(img)[1]
    fg = tf.cast(tf.where(msk[..., 0] > 0.5), tf.int32)
    n = tf.shape(fg)[0]
    on_lesion = (n > 0) & (tf.random.uniform(()) < lesion_p)
    pick = tf.random.uniform((), 0, tf.maximum(n, 1), dtype=tf.int32)
    centre = tf.gather(tf.concat([fg, tf.zeros((1, 2), tf.int32)], axis=0), pick)  # the zero row only when n == 0
    lesion_start = tf.clip_by_value(centre - patch // 2, 0, tf.stack([h - patch, w - patch]))
    random_start = tf.stack([tf.random.uniform((), 0, h - patch + 1, dtype=tf.int32),
                             tf.random.uniform((), 0, w - patch + 1, dtype=tf.int32)])
    start = tf.where(on_lesion, lesion_start, random_start)
    begin = tf.concat([start, [0]], axis=0)
    img = tf.slice(img, begin, [patch, patch, img.shape[-1]])
    msk = tf.slice(msk, begin, [patch, patch, msk.shape[-1]])
    return img, msk


def _tf_dataset_2d(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, axes: list[int],
                   augment: str = "flip", channel_dropout: float = 0.0, lesion_fade: float = 0.0,
                   patch: int | None = None) -> Any:
    """Shuffled batches with the same random flips (and, for light/strong, rotation + zoom) applied
    to image and mask; light/strong also jitter each channel's contrast and brightness. With
    `channel_dropout` p > 0 and several channels, one channel chosen at random is zeroed with
    probability p, so the network cannot rely on a single sequence (e.g. contrast enhancement). With
    `lesion_fade` p > 0, the labelled lesion's contrast to its surroundings is cut by a random 0-90 %
    with probability p, so a network trained on conspicuous lesions also sees faint ones. With `patch`,
    each image is cropped to (patch, patch) after the flips and affine, before the channel dropout and
    fade; half of the lesion slices' crops are centred on lesion."""
    import tensorflow as tf

    c = x.shape[-1]
    size = (int(x.shape[1]), int(x.shape[2]))
    affine = AFFINE_2D.get(augment)
    drop_p = float(channel_dropout) if c > 1 else 0.0
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def aug(a: Any, b: Any) -> Any:
        ab = tf.concat([a, b], axis=-1)
        for ax in axes:
            flip = tf.random.uniform(()) < 0.5
            ab = tf.cond(flip, lambda t=ab, k=ax: tf.reverse(t, [k]), lambda t=ab: t)
        img, msk = ab[..., :c], ab[..., c:]
        if affine is not None:
            degrees, zoom, shift, jitter = affine
            ab = _random_affine_2d(ab, degrees, zoom, size, shift)
            img = ab[..., :c] * tf.random.uniform((c,), 1.0 - jitter, 1.0 + jitter) + tf.random.uniform(
                (c,), -jitter, jitter)
            msk = tf.cast(ab[..., c:] > 0.5, ab.dtype)
        if patch is not None:  # before the fade: its pooling then runs on the crop, not the whole image
            img, msk = _random_crop_2d(img, msk, patch)
        if drop_p > 0:
            hit = tf.cast(tf.random.uniform(()) < drop_p, img.dtype)
            which = tf.one_hot(tf.random.uniform((), 0, c, dtype=tf.int32), c, dtype=img.dtype)
            img = img * (1.0 - hit * which)
        if lesion_fade > 0:  # the pooling is only paid for the images that are faded
            img = tf.cond((tf.random.uniform(()) < lesion_fade) & tf.reduce_any(msk > 0.5),
                          lambda i=img, m=msk: _fade_lesion(i, m, tf.random.uniform((), 0.0, LESION_FADE_MAX)),
                          lambda i=img: i)
        return img, msk

    if axes or affine is not None or drop_p > 0 or lesion_fade > 0 or patch is not None:
        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _patch_sequence(vols: list[np.ndarray], masks: list[np.ndarray], patch: tuple[int, ...], batch_size: int,
                    steps: int, seed: int, axes: list[int]) -> Any:
    """keras PyDataset of random 3D patches (half centred on a foreground voxel), flipped jointly."""
    import keras

    class Patches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.fg = [np.argwhere(m) for m in masks]

        def __len__(self) -> int:
            return steps

        def _one(self) -> tuple[np.ndarray, np.ndarray]:
            i = int(self.rng.integers(len(vols)))
            v, m = vols[i], masks[i]
            pad = [max(0, p - s) for p, s in zip(patch, m.shape)]
            if any(pad):
                v = np.pad(v, [(0, q) for q in pad] + [(0, 0)], mode="edge")
                m = np.pad(m, [(0, q) for q in pad])
            if len(self.fg[i]) and self.rng.random() < 0.5:
                centre = self.fg[i][int(self.rng.integers(len(self.fg[i])))]
                start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, m.shape)]
            else:
                start = [int(self.rng.integers(0, s - p + 1)) for p, s in zip(patch, m.shape)]
            sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
            xv, mv = v[sl], m[sl]
            for ax in axes:
                if self.rng.random() < 0.5:
                    xv, mv = np.flip(xv, ax), np.flip(mv, ax)
            return xv, mv[..., None].astype(np.float32)

        def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
            pairs = [self._one() for _ in range(batch_size)]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    return Patches()


def train_segmenter(data: str | Path | Dataset, out: str | Path, cfg: TrainConfig | None = None,
                    overwrite: bool = False, log: Log = print, base_filters: int = 16, depth: int = 4,
                    verbose: int | str = "auto") -> dict[str, Any]:
    """Train a U-Net on image/mask pairs into the RUN folder `out`; returns run.json's content."""
    cfg = cfg or TrainConfig(task="segmentation")
    model_name = "unet" if cfg.model in ("cnn", "unet") else cfg.model
    from meddx.models.registry import model_spec

    if not model_spec(model_name).is_segmentation:
        raise ConfigError(f"model '{cfg.model}' is a classifier; --task segmentation needs a segmentation model (unet)")
    run_dir = Path(out)
    from meddx.train.fit import _read_history, check_run_dir, configure_tensorflow, model_channels, write_run_folder

    resuming = check_run_dir(run_dir, overwrite, {**cfg.to_dict(), "base_filters": base_filters, "depth": depth,
                                                  "data": str(getattr(data, "source", data))})
    run_dir.mkdir(parents=True, exist_ok=True)

    configure_tensorflow(cfg.threads, cfg.seed)
    import keras

    from meddx.data.prepare import materialise, probe_item
    from meddx.data.splits import assign_splits
    from meddx.models.registry import build_model
    from meddx.transforms.preprocess import Preprocessing

    ds = load_segmentation_dataset(data)
    splits = assign_splits(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    summary = describe(ds, splits)
    log(format_summary(summary))
    tr, va = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    if len(tr) == 0 or (len(va) == 0 and cfg.val_fraction > 0):
        raise DataError(f"need train and val cases; got {len(tr)} train / {len(va)} val", ds.source)
    selecting = len(va) > 0  # a validation split picks the best epoch; without one the last epoch is kept
    if not selecting:
        log("no validation split (val_fraction 0): training the full schedule and keeping the last epoch")
    missing = sum(ds.masks[i] is None for i in range(len(ds)))  # type: ignore[index]
    if missing:
        log(f"note: {missing} case(s) without a mask are treated as all background")

    ndim, channels, native = probe_item(ds)
    spec = model_spec(model_name)
    size = int(cfg.image_size or min(max(native), spec.default_size[ndim]))
    size -= size % 2 ** depth if size >= 2 ** depth else 0
    size = max(size, 2 ** depth)
    intensity = cfg.intensity or "minmax"
    prep = Preprocessing(spatial_ndim=ndim, image_size=size, channels=model_channels(cfg, channels),
                         intensity=intensity, select_channels=cfg.select_channels)
    patch = tuple([size] * ndim)
    batch = cfg.batch_size if ndim == 2 else max(1, min(cfg.batch_size, 2))
    axes = _flip_axes(cfg.augment, ndim)
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
        y_tr = _masks_at(ds.subset(tr), patch)
        y_va = _masks_at(ds.subset(va), patch) if selecting else None
        steps = max(1, math.ceil(len(tr) / batch))
        train_data = _tf_dataset_2d(x_tr, y_tr[..., None].astype(np.float32), batch, cfg.seed, axes, cfg.augment,
                                    cfg.channel_dropout, cfg.lesion_fade, crop)
        val_pairs = None
    else:
        tr_pairs = [_read_pair(ds.items[i], masks_of[i], prep, native=True)[:2] for i in tr]
        val_pairs = [_read_pair(ds.items[i], masks_of[i], prep, native=True)[:2] for i in va]
        n_vox = sum(int(np.prod(v.shape[:3])) for v, _ in tr_pairs)
        steps = max(4, math.ceil(n_vox / (np.prod(patch) * batch)))
        train_data = _patch_sequence([v for v, _ in tr_pairs], [m for _, m in tr_pairs], patch, batch, steps,
                                     cfg.seed, axes)
        x_va = y_va = None
    epochs = cfg.epochs or auto_epochs(len(tr), batch, target_steps=600, lo=10, hi=80)

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
        les = [_dice_np(p, t) for p, t in zip(preds, truths) if t.any()]
        return float(pooled), float(np.mean(les)) if les else float("nan")

    best_file = run_dir / "checkpoints" / "best.weights.h5"

    class ValDice(keras.callbacks.Callback):
        """val_dice (pooled over val cases; the selection score) and val_dice_lesion; keeps the best weights."""

        def __init__(self) -> None:
            super().__init__()
            self.best, self.best_epoch = -np.inf, -1

        def on_train_begin(self, logs: dict | None = None) -> None:
            hist = _read_history(run_dir / "history.csv")
            for row in hist:  # resuming: remember the best so far
                v = float(row.get("val_dice", "nan") or "nan")
                if np.isfinite(v) and v > self.best:
                    self.best, self.best_epoch = v, int(row["epoch"])

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs if logs is not None else {}
            if not selecting:  # nothing to select on: the last epoch is the model
                self.best_epoch = epoch
                return
            d_all, d_les = val_dice()
            logs["val_dice"] = d_all
            logs["val_dice_lesion"] = d_les
            if d_all > self.best:
                self.best, self.best_epoch = d_all, epoch
                self.model.save_weights(str(best_file))

        def on_train_end(self, logs: dict | None = None) -> None:
            if best_file.is_file():
                self.model.load_weights(str(best_file))

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if cfg.max_minutes and time.monotonic() - self.start > 60 * cfg.max_minutes:
                log(f"time budget of {cfg.max_minutes} min reached after epoch {epoch + 1}; stopping")
                self.model.stop_training = True

    best = ValDice()
    callbacks = [
        best,
        *([keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=cfg.patience, verbose=0)]
          if selecting else []),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        TimeBudget(),
    ]
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    if crop:
        log(f"training on random {crop}x{crop} crops of the {size}x{size} images (half of the lesion slices' "
            f"crops centred on lesion); predicting whole images")
    log(f"training {model_name} ({ndim}D, base {base_filters}, depth {depth}) for up to {epochs} epochs "
        f"({len(tr)} train / {len(va)} val cases, batch {batch}, {'resuming' if resuming else 'new run'}) -> {run_dir}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.monotonic()
    model.fit(train_data, epochs=epochs, steps_per_epoch=steps if ndim == 3 else None, callbacks=callbacks,
              verbose=verbose)
    train_seconds = time.monotonic() - t0

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


def _masks_at(ds: Dataset, size: tuple[int, ...]) -> np.ndarray:
    from meddx.data.prepare import load_masks

    m = load_masks(ds, size)
    return np.zeros((len(ds), *size), np.uint8) if m is None else m


# -- inference -------------------------------------------------------------------------

def tta_axes(run: Any) -> list[int]:
    """Spatial axes flipped for test-time augmentation: the flips the run was trained with (run.json
    "tta": true, or `--tta`); [] when TTA is off."""
    if not run.info.get("tta"):
        return []
    augment = str((run.info.get("config") or {}).get("augment") or "none")
    axes = _flip_axes(augment, int(run.info["spatial_ndim"]))
    if not axes:
        raise ConfigError(f"--tta averages over the flips a model was trained with; this run was trained with "
                          f"--augment {augment} (no flips)", run.path)
    return axes


def enable_tta(run: Any) -> None:
    """Switch on flip test-time augmentation for this loaded segmentation RUN (checked: trained with flips)."""
    if run.info.get("kind") != "segmenter":
        raise ConfigError("--tta is implemented for segmentation runs only", run.path)
    run.info["tta"] = True
    tta_axes(run)


def set_stack_min_fraction(run: Any, fraction: float) -> None:
    """Replace this loaded 2D segmentation RUN's stack post-processing fraction (0: off), e.g. to score a run
    trained without it."""
    from meddx.train.config import check_stack_min_fraction

    if run.info.get("kind") != "segmenter" or run.info.get("spatial_ndim") != 2:
        raise ConfigError("--stack-min-fraction applies to 2D segmentation runs only", run.path)
    check_stack_min_fraction(fraction, "--stack-min-fraction")
    run.info.setdefault("postprocess", {})["stack_min_fraction"] = float(fraction)


def model_probability(run: Any, x: np.ndarray) -> np.ndarray:
    """Lesion probability at the model's grid for one preprocessed case `x` (*spatial, C); with TTA the
    mean over the unflipped input and one flip per trained flip axis."""
    info = run.info

    def once(a: np.ndarray) -> np.ndarray:
        if info.get("inference") == "sliding_window":
            logits = sliding_window_predict(run.model, a, info["patch"], info.get("overlap", 0.5))[..., 0]
        else:
            logits = np.asarray(run.model.predict(a[None], verbose=0))[0, ..., 0]
        return 1.0 / (1.0 + np.exp(-logits))

    axes = tta_axes(run)
    prob = once(x)
    for ax in axes:
        prob = prob + np.flip(once(np.ascontiguousarray(np.flip(x, ax))), ax)
    return prob / (1 + len(axes))


def segment_array(run: Any, x: np.ndarray, native_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(probability, binary mask) in `native_shape` for one preprocessed case `x`."""
    n = int(run.info["spatial_ndim"])
    prob = model_probability(run, x)
    if run.info.get("inference") != "sliding_window":
        prob = _resize(prob, native_shape, order=1)
    assert prob.ndim == n
    return _finish(run, prob)


def _finish(run: Any, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pp = run.info.get("postprocess") or {}
    mask = prob >= float(run.info.get("threshold") or 0.5)
    mask = postprocess_mask(mask, int(pp.get("min_size") or 0), pp.get("keep_largest"))
    return prob.astype(np.float32), mask


def _predict_case(run: Any, image_path: str, mask_path: str | None) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
    """(prob, pred mask, Image, truth) for a dataset case, in the image's geometry."""
    native = run.info.get("inference") == "sliding_window"
    x, truth, img = _read_pair(image_path, mask_path, run.preprocessing, native=native)
    prob, pred = segment_array(run, x, truth.shape)
    return prob, pred, img, truth


def predict_segmentation(run: Any, path: str | Path) -> dict[str, Any]:
    """Mask (in the input's geometry) and lesions (mm / mL when the spacing is known) for one input.

    A volume given to a 2D model is segmented slice by slice.
    """
    from meddx.explain.lesions import mask_to_lesions
    from meddx.io import read_image

    img = read_image(path)
    if img.is_sequence:
        raise InputError("is a sequence (video / 4D series); a segmenter needs an image or a volume", path)
    n = int(run.info["spatial_ndim"])
    spatial = tuple(int(s) for s in img.spatial_shape)
    prep = run.preprocessing
    if img.spatial_ndim == n:
        x = _native_prep(prep, spatial)(img) if run.info.get("inference") == "sliding_window" else prep(img)
        prob, mask = segment_array(run, x, spatial)
    elif img.spatial_ndim == 3 and n == 2:
        probs = []
        for k in range(spatial[0]):
            xk = prep.batch([img.array[k]], progress=False)[0]
            probs.append(_resize(model_probability(run, xk), spatial[1:], order=1))
        prob, mask = _finish(run, np.stack(probs))
        mask = drop_minor_components(mask, stack_min_fraction(run))
    else:
        raise InputError(f"is a {img.spatial_ndim}D image; this segmenter is {n}D", path)
    spacing = _spacing_of(img)
    lesions = mask_to_lesions(mask, spacing=spacing, connectivity=mask.ndim)  # as postprocess_mask counts them
    voxel = float(np.prod(spacing)) if spacing else None
    return {
        "source": str(path), "image": img, "mask": mask, "probability": prob, "lesions": lesions,
        "n_lesions": len(lesions), "n_voxels": int(mask.sum()), "spacing": spacing,
        "volume_ml": None if voxel is None else float(mask.sum() * voxel / 1000.0),
        "units": "mm" if spacing else "px",
    }


def segmentation_study(run: Any, path: str | Path) -> dict[str, Any]:
    """One input segmented, in the form `meddx report` renders: the lesion probability map as the heatmap,
    one lesion per connected component of the mask (peak / mean probability as its score) and, for volumes,
    per-slice peak probabilities with the slices of largest lesion area as key slices."""
    r = predict_segmentation(run, path)
    img, prob, mask = r["image"], np.asarray(r["probability"], np.float32), r["mask"]
    threshold = float(run.info.get("threshold") or 0.5)
    peak = float(prob.max()) if prob.size else 0.0
    found = bool(mask.any())
    for les in r["lesions"]:
        values = prob[les["mask"]]
        les["score"], les["score_mean"] = float(values.max()), float(values.mean())
    display = _display(img)  # grey; the middle channel of an RGB-like image
    slice_scores = key_slices = None
    if prob.ndim == 3:
        slice_scores = [float(v) for v in prob.reshape(len(prob), -1).max(axis=1)]
        area = mask.reshape(len(mask), -1).sum(axis=1)
        order = np.argsort(-area, kind="stable") if found else np.argsort(-np.asarray(slice_scores), kind="stable")
        key_slices = [int(k) for k in order[:3] if not found or area[k] > 0]
    pp = run.info.get("postprocess") or {}
    note = None
    if not found and peak >= threshold:
        note = (f"The peak lesion probability {peak:.3f} is above the threshold {threshold:.2f} only in components "
                f"smaller than {int(pp.get('min_size') or 0)} px, which post-processing removes.")
    return {
        "kind": "segmentation", "source": str(path), "image": img, "display": display,
        "probs": [1.0 - peak, peak], "class_names": list(SEG_CLASS_NAMES), "positive_class": "lesion",
        "predicted": "lesion" if found else "normal", "probability": peak if found else 1.0 - peak,
        "threshold": threshold, "heatmap": prob, "lesions": r["lesions"], "slice_scores": slice_scores,
        "key_slices": key_slices, "spacing": tuple(img.spacing), "n_voxels": r["n_voxels"],
        "volume_ml": r["volume_ml"], "units": r["units"], "postprocess": pp, "note": note,
        "tta_flip_axes": tta_axes(run),
    }


def predict_segmentations(run: Any, files: Sequence[Path], out: str | Path, log: Log = print) -> Path:
    """predictions.csv (+ masks/<stem>_mask.npy, overlay PNG, lesions.csv) for several inputs."""
    from meddx.workflows import _safe_stem, _write_csv

    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows, lesion_rows = [], []
    for i, f in enumerate(files):
        with naming(f):
            r = predict_segmentation(run, f)
        stem = f"{i + 1:03d}_{_safe_stem(Path(f))}"
        mask_file = out / "masks" / f"{stem}_mask.npy"
        with atomic_path(mask_file) as tmp:
            np.save(tmp, r["mask"].astype(np.uint8))
        png = out / "masks" / f"{stem}_overlay.png"
        _save_panel([(_display(r["image"]), None, r["mask"], Path(str(f)).name)], png)
        rows.append({"input": str(f), "predicted": "lesion" if r["n_lesions"] else "normal",
                     "n_lesions": r["n_lesions"], "n_voxels": r["n_voxels"], "volume_ml": r["volume_ml"],
                     "units": r["units"], "mask": str(mask_file), "overlay": str(png)})
        for les in r["lesions"]:
            lesion_rows.append({"input": str(f), **{k: v for k, v in les.items() if k != "mask"}})
        log(f"{f}: {r['n_lesions']} lesion(s), {r['n_voxels']} voxels")
    _write_csv(out / "predictions.csv", rows)
    _write_csv(out / "lesions.csv", lesion_rows, empty_header=["input", "id"])
    log(f"wrote {out / 'predictions.csv'}")
    return out / "predictions.csv"


# -- evaluation ------------------------------------------------------------------------

def evaluate_segmenter(run: Any, data: str | Path | Dataset, out: str | Path, split: str = "test",
                       log: Log = print) -> dict[str, Any]:
    """out/metrics.json (dice, iou, hd95, asd, lesion sensitivity, FP/image, lesion-slice Dice) + panel PNG."""
    from meddx.data.splits import assign_splits
    from meddx.evaluate.segmentation import segmentation_metrics

    ds = load_segmentation_dataset(data)
    cfg = run.info.get("config", {})
    splits = assign_splits(ds, cfg.get("val_fraction", 0.15), cfg.get("test_fraction", 0.15), cfg.get("seed", 0))
    idx = np.arange(len(ds)) if split == "all" else np.flatnonzero(splits == split)
    if len(idx) == 0:
        avail = ", ".join(sorted(set(splits) - {""})) or "none"
        raise DataError(f"no '{split}' split in this data (available: {avail})", ds.source)
    if split in ("train", "val") and Path(str(run.info["data"]["source"])).resolve() == Path(str(ds.source)).resolve():
        log(f"warning: the '{split}' split was used for {'training' if split == 'train' else 'model selection'}; "
            f"its metrics are optimistic")
    preds, truths, spacings, shown = [], [], [], []
    t0 = time.monotonic()
    for i in idx:
        _, pred, img, truth = _predict_case(run, ds.items[i], ds.masks[i])  # type: ignore[index]
        preds.append(pred)
        truths.append(truth)
        spacings.append(_spacing_of(img))
        shown.append(img)
    stack_fraction = stack_min_fraction(run)
    if stack_fraction > 0 and run.info.get("spatial_ndim") == 2:
        if ds.patient_ids is None:
            log("note: stack post-processing needs patient IDs to group slices; this data has none, not applied")
        else:
            preds, skipped = postprocess_stacks(preds, ds.patient_ids[idx], [ds.items[i] for i in idx],
                                                stack_fraction)
            if skipped:
                log(f"warning: {skipped} patient(s) have slices of different shapes; their slices were not "
                    f"stack post-processed")
    known = all(s is not None for s in spacings)
    metrics = segmentation_metrics(preds, truths, spacings if known else None)
    metrics["units"] = "mm" if known else "px"
    empty = [c for c in metrics["per_case"] if c["truth_empty"]]
    metrics["false_positive_rate_empty_cases"] = (
        float(np.mean([not c["pred_empty"] for c in empty])) if empty else None)
    names = ds.item_names()
    for c, i in zip(metrics["per_case"], idx):
        c["item"] = names[i]
        if ds.patient_ids is not None:
            c["patient_id"] = str(ds.patient_ids[i])
    if ds.patient_ids is not None and run.info.get("spatial_ndim") == 2 and all(
            p.shape == preds[0].shape for p in preds):
        metrics["dice_per_patient"] = _per_patient_dice(preds, truths, ds.patient_ids[idx])
    metrics.update(split=split, run=str(run.path), data=str(ds.source), model=run.info.get("model"),
                   tta_flip_axes=tta_axes(run), seconds=round(time.monotonic() - t0, 1))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    panel = out / "segmentation_panel.png"
    order = sorted(range(len(idx)), key=lambda k: -int(truths[k].sum()))
    pick = [k for k in order if truths[k].any()][:6] or order[:6]
    _save_panel([(_display(shown[k]), truths[k], preds[k], f"{Path(names[idx[k]]).name}  "
                  f"Dice {metrics['per_case'][k]['dice']:.2f}") for k in pick], panel)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    log(f"{split}: n={metrics['n']}, Dice {fmt(metrics['dice'])} (lesion cases {fmt(metrics['dice_lesion_cases'])}, "
        f"n={metrics['n_lesion_cases']}), HD95 {fmt(metrics['hd95'])} {metrics['units']}, lesion sensitivity "
        f"{fmt(metrics['lesion_sensitivity'])}, FP/image {fmt(metrics['fp_per_image'])} -> {out / 'metrics.json'}")
    return metrics


def _per_patient_dice(preds: list[np.ndarray], truths: list[np.ndarray], patients: np.ndarray) -> dict[str, float]:
    """Dice of each patient's slices stacked into one volume."""
    out = {}
    for p in sorted(set(patients)):
        k = np.flatnonzero(patients == p)
        out[str(p)] = _dice_np(np.stack([preds[i] for i in k]), np.stack([truths[i] for i in k]))
    return out


def _display(img: Any) -> np.ndarray:
    """A 2D grey view of an image (middle channel of RGB-like MR; the slice of largest area for 3D)."""
    a = np.asarray(img.array, dtype=np.float32)
    if img.has_channels:
        a = a[..., a.shape[-1] // 2]
    lo, hi = np.percentile(a, [0.5, 99.5]) if a.size else (0, 1)
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def _save_panel(cases: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, str]], path: Path) -> Path:
    """Image with truth (green) and prediction (red) outlines; 3D cases show their busiest slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(cases))
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.5 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (im, truth, pred, title) in zip(axes.ravel(), cases):
        if im.ndim == 3:
            ref = truth if truth is not None and truth.any() else pred
            k = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(axis=1))) if ref.any() else im.shape[0] // 2
            im, pred = im[k], pred[k]
            truth = None if truth is None else truth[k]
        ax.imshow(im, cmap="gray")
        if truth is not None and truth.any():
            ax.contour(truth.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        if pred.any():
            ax.contour(pred.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(title, fontsize=7)
    fig.suptitle("truth: green, prediction: red", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
