"""Localisation metrics for saliency heatmaps against lesion masks (numpy only, no Keras).

A heatmap whose shape differs from its mask is resized to the mask (bilinear/trilinear).
Cases with an empty mask have nothing to point at: ``localisation_metrics`` leaves them out
and counts them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError


def _prepare(heatmap: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask)
    m = m >= 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
    if h.ndim == m.ndim + 1 and h.shape[-1] == 1:
        h = h[..., 0]
    if h.ndim != m.ndim:
        raise InputError(f"heatmap {h.shape} and mask {m.shape} have different dimensions")
    if h.shape != m.shape:
        from skimage.transform import resize

        h = resize(h, m.shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    if not np.all(np.isfinite(h)):
        raise InputError("heatmap contains NaN or infinite values")
    return h, m


def pointing_game(heatmap: Any, mask: Any, tolerance: float = 0.0) -> bool:
    """True when the heatmap's maximum (first argmax) lies inside the mask, or within
    ``tolerance`` pixels (Euclidean) of it. False for an empty mask."""
    from scipy import ndimage

    h, m = _prepare(heatmap, mask)
    if not m.any():
        return False
    peak = np.unravel_index(int(np.argmax(h)), h.shape)
    if m[peak]:
        return True
    if tolerance > 0:
        return bool(ndimage.distance_transform_edt(~m)[peak] <= tolerance)
    return False


def best_threshold_iou(heatmap: Any, mask: Any) -> tuple[float, float]:
    """Best IoU between ``heatmap >= t`` and the mask over every threshold t (an oracle upper
    bound on localisation quality), and that t on the min-max normalised [0, 1] heatmap scale.
    Exact: every distinct heatmap value is tried. (0.0, nan) for an empty mask."""
    h, m = _prepare(heatmap, mask)
    if not m.any():
        return 0.0, float("nan")
    lo, hi = float(h.min()), float(h.max())
    hn = (h - lo) / (hi - lo) if hi > lo else np.ones_like(h)
    v = hn.ravel()
    order = np.argsort(-v, kind="stable")
    vs = v[order]
    inside = np.cumsum(m.ravel()[order])  # mask voxels among the k+1 hottest
    count = np.arange(1, v.size + 1)
    # a threshold keeps every voxel >= it: evaluate only at the last index of each tie block
    last = np.append(vs[1:] != vs[:-1], True)
    ious = inside[last] / (count[last] + m.sum() - inside[last])
    best = int(np.argmax(ious))
    return float(ious[best]), float(vs[last][best])


def localisation_metrics(heatmaps: Sequence[Any], masks: Sequence[Any], tolerance: float = 0.0) -> dict[str, Any]:
    """Pointing-game hit rate and mean best-threshold IoU over cases with a non-empty mask,
    as a JSON-ready dict with a per-case list."""
    heatmaps = list(heatmaps)
    masks = list(masks)
    if len(heatmaps) != len(masks):
        raise InputError(f"{len(heatmaps)} heatmaps for {len(masks)} masks")
    cases = []
    for i, (h, m) in enumerate(zip(heatmaps, masks)):
        hh, mm = _prepare(h, m)
        if not mm.any():
            cases.append({"index": i, "empty_mask": True, "hit": None, "best_iou": None, "best_threshold": None})
            continue
        b_iou, b_thr = best_threshold_iou(hh, mm)
        cases.append({"index": i, "empty_mask": False, "hit": pointing_game(hh, mm, tolerance),
                      "best_iou": b_iou, "best_threshold": b_thr})
    used = [c for c in cases if not c["empty_mask"]]
    return {
        "n": len(cases),
        "n_evaluated": len(used),
        "n_empty_mask": len(cases) - len(used),
        "tolerance": float(tolerance),
        "pointing_hit_rate": float(np.mean([c["hit"] for c in used])) if used else None,
        "mean_best_iou": float(np.mean([c["best_iou"] for c in used])) if used else None,
        "per_case": cases,
    }
