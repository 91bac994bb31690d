"""Localisation metrics: does a heatmap point at the lesion? (numpy only, no Keras)."""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.errors import InputError


def _pairs(heatmaps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(heatmaps, dtype=np.float64)
    m = np.asarray(masks) != 0
    if h.shape != m.shape:
        raise InputError(f"heatmaps {h.shape} and masks {m.shape} must have the same shape")
    return h, m


def pointing_hits(heatmaps: Any, masks: Any, tolerance_px: float = 0.0) -> np.ndarray:
    """Per-image pointing game (N,) bool: the peak of heatmaps[i] lies in masks[i] (or within
    `tolerance_px` pixels of it). Images with an empty mask count as misses. One rule for the
    whole package: each case is scored by `meddx.evaluate.localisation.pointing_game`."""
    from meddx.evaluate.localisation import pointing_game as point_case

    h, m = _pairs(heatmaps, masks)
    return np.asarray([point_case(heat, mask, tolerance_px) for heat, mask in zip(h, m)], dtype=bool)


def pointing_game(heatmaps: Any, masks: Any, tolerance_px: float = 0.0) -> float:
    """Fraction of images whose heatmap peak falls inside their mask (Zhang et al. pointing game)."""
    hits = pointing_hits(heatmaps, masks, tolerance_px)
    return float(hits.mean()) if hits.size else float("nan")


def energy_inside(heatmaps: Any, masks: Any) -> np.ndarray:
    """Per-image share of heat inside the mask (energy-based pointing game, Score-CAM paper)."""
    h, m = _pairs(heatmaps, masks)
    h = np.maximum(h, 0.0)
    axes = tuple(range(1, h.ndim))
    total = h.sum(axis=axes)
    inside = (h * m).sum(axis=axes)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
