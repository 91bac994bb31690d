"""Grey 0-1 views of an input for overlays and reports, in the input's spatial shape."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def grey_display(image: Any) -> np.ndarray:
    """Channels averaged, 0.5-99.5 percentile window (CT: soft-tissue window -160..240 HU); frames stay on axis 0."""
    arr = np.asarray(image.array, dtype=np.float32)
    if image.has_channels:
        arr = arr[..., :3].mean(axis=-1)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if image.modality == "CT":
        lo, hi = -160.0, 240.0  # abdomen / soft-tissue window
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def middle_channel_display(image: Any) -> np.ndarray:
    """The middle channel of multi-channel images (FLAIR of LGG's pre/FLAIR/post), 0.5-99.5 percentile window."""
    a = np.asarray(image.array, dtype=np.float32)
    if image.has_channels:
        a = a[..., a.shape[-1] // 2]
    lo, hi = np.percentile(a, [0.5, 99.5]) if a.size else (0, 1)
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def resize_to(arr: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """`arr` resampled to `shape` (linear by default; order 0 for masks); unchanged when it already fits."""
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(shape):
        return arr
    return resize(arr, tuple(shape), order=order, anti_aliasing=False, preserve_range=True)
