"""Post-processing of predicted masks: drop small connected components, and per-patient stack clean-up of 2D
slice masks (3D components smaller than a fraction of the largest go)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


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


def dice_np(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    s = pred.sum() + truth.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(pred, truth).sum() / s)
