"""Heatmaps and masks -> lesion candidates (connected components) with pixel and mm geometry.

A lesion is a plain dict:
  id            1-based rank (highest peak heat first for heatmaps; label order for masks)
  label         the label value in a label mask (masks only), else the component number
  score         peak heat inside the lesion (None for masks); `score_mean` the mean heat
  n_px          pixel/voxel count
  centroid_px   geometric centroid, numpy axis order ((y, x) or (z, y, x)), float
  peak_px       position of the peak heat (heatmaps; for masks the pixel nearest the centroid)
  bbox_px       ((min, max), ...) per axis, inclusive indices
  extent_px     max - min + 1 per axis
  with spacing: spacing_mm, centroid_mm (index * spacing, relative to voxel 0), extent_mm,
                area_mm2 (2D) or volume_ml (3D; voxels * voxel volume / 1000)
  with an `Image` as spacing: also centroid_lps_mm (patient coordinates via its affine)
  mask          boolean array, the lesion's pixels (dropped by `lesions_table`)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError

_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _geometry(spacing: Any, ndim: int) -> tuple[tuple[float, ...] | None, np.ndarray | None]:
    """(spacing tuple or None, 4x4 LPS affine or None) from a spacing sequence or an `Image`."""
    from meddx.io.image import Image

    if spacing is None:
        return None, None
    affine = None
    if isinstance(spacing, Image):
        img = spacing
        if img.spatial_ndim != ndim:
            raise ConfigError(f"image is {img.spatial_ndim}D but the heatmap/mask is {ndim}D")
        affine = img.affine_lps() if img.has_geometry else None
        spacing = img.spacing[:ndim]
    sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).reshape(-1))
    if len(sp) != ndim or any(not np.isfinite(s) or s <= 0 for s in sp):
        raise ConfigError(f"spacing {spacing!r} must give {ndim} positive values (mm per array axis)")
    return sp, affine


def _check_array(arr: Any, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise InputError(f"{what} must be 2D (y, x) or 3D (z, y, x), got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{what} is empty")
    return a


def _describe(region: np.ndarray, heat: np.ndarray | None, spacing: tuple[float, ...] | None,
              affine: np.ndarray | None) -> dict[str, Any]:
    """Geometry (and heat statistics) of one boolean region."""
    ndim = region.ndim
    idx = np.nonzero(region)
    coords = np.stack(idx, axis=1)
    n = int(coords.shape[0])
    centroid = coords.mean(axis=0)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    lesion: dict[str, Any] = {
        "n_px": n,
        "centroid_px": tuple(float(c) for c in centroid),
        "bbox_px": tuple((int(a), int(b)) for a, b in zip(lo, hi)),
        "extent_px": tuple(int(b - a + 1) for a, b in zip(lo, hi)),
    }
    if heat is not None:
        values = heat[idx]
        k = int(np.argmax(values))
        lesion["score"] = float(values[k])
        lesion["score_mean"] = float(values.mean())
        lesion["peak_px"] = tuple(int(c) for c in coords[k])
    else:
        lesion["score"] = None
        lesion["score_mean"] = None
        k = int(np.argmin(((coords - centroid) ** 2).sum(axis=1)))
        lesion["peak_px"] = tuple(int(c) for c in coords[k])
    if spacing is not None:
        sp = np.asarray(spacing)
        voxel_mm = float(np.prod(sp))
        lesion["spacing_mm"] = tuple(float(s) for s in sp)
        lesion["centroid_mm"] = tuple(float(c) for c in centroid * sp)
        lesion["extent_mm"] = tuple(float(e) for e in (hi - lo + 1) * sp)
        if ndim == 3:
            lesion["volume_ml"] = n * voxel_mm / 1000.0
        else:
            lesion["area_mm2"] = n * voxel_mm
        if affine is not None:
            pos = np.zeros(4)
            pos[:ndim] = centroid
            pos[3] = 1.0
            lesion["centroid_lps_mm"] = tuple(float(v) for v in (affine @ pos)[:3])
    lesion["mask"] = region
    return lesion


def heatmap_to_lesions(heatmap: Any, threshold: float | str = 0.5, min_size: int = 4, spacing: Any = None,
                       max_lesions: int | None = 5, connectivity: int = 1) -> list[dict[str, Any]]:
    """Connected regions where `heatmap` >= threshold * max (or Otsu's threshold), strongest first.

    `min_size` drops regions smaller than that many pixels/voxels; `spacing` (mm per array axis,
    or an `Image`) adds mm/mL measurements; `connectivity` 1 = faces, ndim = faces+edges+corners.
    """
    from scipy import ndimage

    heat = _check_array(heatmap, "heatmap").astype(np.float64)
    heat = np.where(np.isfinite(heat), heat, 0.0)
    sp, affine = _geometry(spacing, heat.ndim)
    peak = float(heat.max())
    if peak <= 0:
        return []
    if isinstance(threshold, str):
        if threshold.lower() != "otsu":
            raise ConfigError(f"threshold must be a fraction of the maximum or 'otsu', got {threshold!r}")
        from skimage.filters import threshold_otsu

        if float(heat.min()) == peak:
            level = peak
        else:
            level = float(threshold_otsu(heat))
        mask = heat > level if level < peak else heat >= peak
    else:
        frac = float(threshold)
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"threshold {threshold!r} must lie in [0, 1] (fraction of the peak heat)")
        mask = (heat >= frac * peak) & (heat > 0)
    structure = ndimage.generate_binary_structure(heat.ndim, max(1, min(int(connectivity), heat.ndim)))
    labels, n = ndimage.label(mask, structure=structure)
    lesions = []
    for lab in range(1, n + 1):
        region = labels == lab
        if int(region.sum()) < int(min_size):
            continue
        lesion = _describe(region, heat, sp, affine)
        lesion["label"] = lab
        lesions.append(lesion)
    lesions.sort(key=lambda d: (-d["score"], -d["score_mean"], -d["n_px"]))
    if max_lesions is not None:
        lesions = lesions[: int(max_lesions)]
    for i, lesion in enumerate(lesions, start=1):
        lesion["id"] = i
    return [_ordered(d) for d in lesions]


def mask_to_lesions(mask: Any, spacing: Any = None, min_size: int = 1, connectivity: int = 1) -> list[dict[str, Any]]:
    """Lesions of a binary mask (one per connected component) or a label map (one per label value).

    Volumes are exact: `volume_ml` = voxel count * voxel volume (mm^3) / 1000.
    """
    from scipy import ndimage

    arr = _check_array(mask, "mask")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError("mask must hold integer labels or booleans, got non-integer values")
        arr = arr.astype(np.int64)
    sp, affine = _geometry(spacing, arr.ndim)
    values = np.unique(arr[arr != 0])
    lesions = []
    if values.size <= 1 or arr.dtype == bool:
        structure = ndimage.generate_binary_structure(arr.ndim, max(1, min(int(connectivity), arr.ndim)))
        labels, n = ndimage.label(arr != 0, structure=structure)
        regions = [(lab, labels == lab) for lab in range(1, n + 1)]
    else:
        regions = [(int(v), arr == v) for v in values]
    for lab, region in regions:
        if int(region.sum()) < int(min_size):
            continue
        lesion = _describe(region, None, sp, affine)
        lesion["label"] = int(lab)
        lesions.append(lesion)
    for i, lesion in enumerate(lesions, start=1):
        lesion["id"] = i
    return [_ordered(d) for d in lesions]


_ORDER = ("id", "label", "score", "score_mean", "n_px", "centroid_px", "peak_px", "bbox_px", "extent_px",
          "spacing_mm", "centroid_mm", "centroid_lps_mm", "extent_mm", "area_mm2", "volume_ml", "mask")


def _ordered(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: d[k] for k in _ORDER if k in d}
    out.update({k: v for k, v in d.items() if k not in out})
    return out


def lesions_table(lesions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows for CSV: per-axis columns (centroid_px_y, bbox_px_x_min, extent_mm_z...), no masks."""
    rows = []
    for lesion in lesions:
        ndim = len(lesion.get("centroid_px", ())) or 2
        axes = _AXES.get(ndim, tuple(f"a{i}" for i in range(ndim)))
        row: dict[str, Any] = {}
        for key, value in lesion.items():
            if key == "mask":
                continue
            if key == "bbox_px":
                for ax, (lo, hi) in zip(axes, value):
                    row[f"bbox_px_{ax}_min"] = int(lo)
                    row[f"bbox_px_{ax}_max"] = int(hi)
            elif key == "centroid_lps_mm":
                for ax, v in zip("LPS", value):
                    row[f"centroid_lps_mm_{ax}"] = float(v)
            elif isinstance(value, (tuple, list, np.ndarray)):
                for ax, v in zip(axes, value):
                    row[f"{key}_{ax}"] = v.item() if isinstance(v, np.generic) else v
            else:
                row[key] = value.item() if isinstance(value, np.generic) else value
        rows.append(row)
    return rows
