"""Sliding-window inference: logits over an array larger than the model's patch, averaging overlapping windows."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from meddx.errors import ConfigError


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
