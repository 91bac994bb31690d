"""Segmentation metrics over binary masks (2D or 3D numpy arrays), in physical units when the
voxel spacing is known. Never imports keras/tensorflow.

Masks: bool arrays as they are; integer arrays -> ``!= 0``; float arrays -> ``>= 0.5``.
Surface voxels = mask minus its erosion (face connectivity; voxels on the array border count
as surface); distances are Euclidean via ``scipy.ndimage.distance_transform_edt(sampling=spacing)``.

Empty-mask conventions (documented, tested):
- both empty: dice = iou = 1, hd95 = asd = 0 (a correct "nothing there").
- exactly one empty: dice = iou = 0, hd95 = asd = nan (undefined; ``segmentation_metrics``
  averages over the cases where they are defined and reports how many were not).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError


def _mask(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return arr >= 0.5
    return arr != 0


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _mask(pred), _mask(truth)
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and ground truth {t.shape} masks differ in shape")
    if p.ndim not in (2, 3):
        raise InputError(f"masks must be 2D or 3D, got {p.ndim}D")
    return p, t


def _spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.ravel(spacing))
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or any(s <= 0 for s in sp):
        raise InputError(f"spacing {sp} does not fit a {ndim}D mask (need {ndim} positive values)")
    return sp


def dice(pred: Any, truth: Any) -> float:
    """Dice = 2|P∩T| / (|P| + |T|); 1.0 when both masks are empty."""
    p, t = _pair(pred, truth)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred: Any, truth: Any) -> float:
    """Intersection over union (Jaccard); 1.0 when both masks are empty."""
    p, t = _pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def _surface(m: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def surface_distances(pred: Any, truth: Any, spacing: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred surface -> truth surface, truth -> pred), physical units.
    Both arrays are empty if either mask is empty."""
    from scipy import ndimage

    p, t = _pair(pred, truth)
    sp = _spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        return np.zeros(0), np.zeros(0)
    # Crop to the union's bounding box (+1 voxel, clipped at the array border): every surface
    # voxel lies inside it, so distances are unchanged while big volumes get much cheaper.
    coords = np.nonzero(p | t)
    box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    p, t = p[box], t[box]
    sp_, st_ = _surface(p), _surface(t)
    dist_to_t = ndimage.distance_transform_edt(~st_, sampling=sp)
    dist_to_p = ndimage.distance_transform_edt(~sp_, sampling=sp)
    return dist_to_t[sp_], dist_to_p[st_]


def _empty_case(p: np.ndarray, t: np.ndarray) -> float | None:
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    return None


def hausdorff95(pred: Any, truth: Any, spacing: Any = None) -> float:
    """95th-percentile symmetric Hausdorff distance: max of the two directed 95th percentiles
    of surface distances (MONAI's definition), in the units of ``spacing`` (voxels if None).
    Both empty: 0; one empty: nan."""
    p, t = _pair(pred, truth)
    special = _empty_case(p, t)
    if special is not None:
        return special
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def hausdorff(pred: Any, truth: Any, spacing: Any = None) -> float:
    """Maximum symmetric surface distance (Hausdorff). Both empty: 0; one empty: nan."""
    p, t = _pair(pred, truth)
    special = _empty_case(p, t)
    if special is not None:
        return special
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(max(d_pt.max(), d_tp.max()))


def average_surface_distance(pred: Any, truth: Any, spacing: Any = None) -> float:
    """Symmetric average surface distance: mean over the surface voxels of both masks of the
    distance to the other surface. Both empty: 0; one empty: nan."""
    p, t = _pair(pred, truth)
    special = _empty_case(p, t)
    if special is not None:
        return special
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(np.concatenate([d_pt, d_tp]).mean())


def lesion_detection(
    pred: Any,
    truth: Any,
    spacing: Any = None,
    min_overlap: float = 0.0,
    min_volume: float = 0.0,
) -> dict[str, Any]:
    """Lesion-wise detection with connected components (full 8/26 connectivity).

    A truth lesion is *detected* when the prediction covers some of it and at least
    ``min_overlap`` (fraction of its voxels). A predicted component is a *false positive* when it
    covers no truth voxel, or less than ``min_overlap`` of its own voxels lies in the truth.
    Components smaller than ``min_volume`` (physical units, voxels if no spacing) are ignored.
    Returns n_lesions, n_detected, sensitivity (None without lesions), n_pred_components,
    n_false_positive and the truth lesion volumes.
    """
    from scipy import ndimage

    p, t = _pair(pred, truth)
    voxel = float(np.prod(_spacing(spacing, p.ndim)))
    structure = ndimage.generate_binary_structure(p.ndim, p.ndim)
    t_lab, n_t = ndimage.label(t, structure=structure)
    p_lab, n_p = ndimage.label(p, structure=structure)
    t_size = np.bincount(t_lab.ravel(), minlength=n_t + 1)
    p_size = np.bincount(p_lab.ravel(), minlength=n_p + 1)
    t_hit = np.bincount(t_lab[p].ravel(), minlength=n_t + 1)  # voxels of each lesion covered by pred
    p_hit = np.bincount(p_lab[t].ravel(), minlength=n_p + 1)  # voxels of each pred comp. in truth
    t_keep = np.arange(1, n_t + 1)[t_size[1:] * voxel >= min_volume]
    p_keep = np.arange(1, n_p + 1)[p_size[1:] * voxel >= min_volume]
    detected = [k for k in t_keep if t_hit[k] > 0 and t_hit[k] / t_size[k] >= min_overlap]
    false_pos = [k for k in p_keep if p_hit[k] == 0 or p_hit[k] / p_size[k] < min_overlap]
    n_les = int(len(t_keep))
    return {
        "n_lesions": n_les,
        "n_detected": int(len(detected)),
        "sensitivity": (len(detected) / n_les) if n_les else None,
        "n_pred_components": int(len(p_keep)),
        "n_false_positive": int(len(false_pos)),
        "lesion_volumes": [float(t_size[k] * voxel) for k in t_keep],
    }


def _nan_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _nanmean(values: Sequence[float]) -> float | None:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else None


def segmentation_metrics(
    preds: Sequence[Any],
    truths: Sequence[Any],
    spacings: Any = None,
    min_overlap: float = 0.0,
    min_volume: float = 0.0,
) -> dict[str, Any]:
    """Per-case and mean dice/iou/hd95/asd plus lesion-wise sensitivity and false positives per
    image, as a JSON-ready dict (undefined values are None).

    ``spacings``: None (voxel units), one spacing for all cases, or one per case.
    Means of hd95/asd skip cases where they are undefined (exactly one mask empty); the count
    is reported in ``n_hd95_undefined``. Lesion sensitivity pools lesions over all cases.
    """
    preds = list(preds)
    truths = list(truths)
    if len(preds) != len(truths):
        raise InputError(f"{len(preds)} predictions for {len(truths)} ground-truth masks")
    n = len(preds)
    if spacings is None:
        per_sp: list[Any] = [None] * n
    elif len(spacings) and all(np.ndim(v) == 0 and v is not None for v in spacings):
        per_sp = [tuple(float(v) for v in spacings)] * n  # one spacing for every case
    else:
        per_sp = list(spacings)
        if len(per_sp) != n:
            raise InputError(f"{len(per_sp)} spacings for {n} cases")
    cases = []
    for i, (p, t, sp) in enumerate(zip(preds, truths, per_sp)):
        pm, tm = _pair(p, t)
        les = lesion_detection(pm, tm, sp, min_overlap=min_overlap, min_volume=min_volume)
        cases.append({
            "index": i,
            "dice": dice(pm, tm),
            "iou": iou(pm, tm),
            "hd95": _nan_none(hausdorff95(pm, tm, sp)),
            "asd": _nan_none(average_surface_distance(pm, tm, sp)),
            "truth_empty": bool(not tm.any()),
            "pred_empty": bool(not pm.any()),
            "n_lesions": les["n_lesions"],
            "n_detected": les["n_detected"],
            "n_false_positive": les["n_false_positive"],
            "spacing": None if sp is None else [float(s) for s in _spacing(sp, pm.ndim)],
        })
    return {**summarise_cases(cases), "units": "mm" if spacings is not None else "voxels", "per_case": cases,
            "conventions": "both masks empty: dice=iou=1, hd95=asd=0; one empty: dice=iou=0, hd95=asd=None "
                           "(excluded from the means); hd95 = max of directed 95th percentiles"}


def patient_dice(preds: Sequence[Any], truths: Sequence[Any], patients: Sequence[Any]) -> dict[str, Any]:
    """Dice of each patient's slices stacked into one volume, and their mean over patients (the figure Buda et al.
    2019 report for LGG): {"mean", "per_patient", "n_patients"}. A patient with no lesion in truth or prediction
    scores 1; a patient whose slices differ in shape cannot be stacked and is left out (counted in "skipped")."""
    ids = np.asarray([str(p) for p in patients])
    if not (len(preds) == len(truths) == len(ids)):
        raise InputError(f"patient_dice: {len(preds)} predictions, {len(truths)} masks, {len(ids)} patient ids")
    per: dict[str, float] = {}
    skipped = []
    for pid in sorted(set(ids.tolist())):
        k = np.flatnonzero(ids == pid)
        shapes = {np.shape(preds[i]) for i in k} | {np.shape(truths[i]) for i in k}
        if len(shapes) != 1:
            skipped.append(pid)
            continue
        pv = np.stack([_mask(preds[i]) for i in k])
        tv = np.stack([_mask(truths[i]) for i in k])
        total = int(pv.sum() + tv.sum())
        per[pid] = 1.0 if total == 0 else float(2.0 * np.logical_and(pv, tv).sum() / total)
    mean = float(np.mean(list(per.values()))) if per else None
    return {"mean": mean, "per_patient": per, "n_patients": len(per), "skipped": skipped}


def summarise_cases(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means and pooled lesion counts over per-case rows (as `segmentation_metrics` writes them), also for
    rows gathered from several evaluations (k-fold); `dice_lesion_cases` averages only cases with a lesion."""
    n = len(cases)
    n_les = sum(c["n_lesions"] for c in cases)
    n_det = sum(c["n_detected"] for c in cases)
    n_fp = sum(c["n_false_positive"] for c in cases)
    dices = [c["dice"] for c in cases]
    lesion_dices = [c["dice"] for c in cases if not c["truth_empty"]]
    return {
        "task": "segmentation",
        "n": n,
        "dice": _nanmean(dices),
        "dice_lesion_cases": _nanmean(lesion_dices),
        "n_lesion_cases": len(lesion_dices),
        "dice_std": float(np.std(dices)) if dices else None,
        "iou": _nanmean([c["iou"] for c in cases]),
        "hd95": _nanmean([c["hd95"] for c in cases]),
        "asd": _nanmean([c["asd"] for c in cases]),
        "n_hd95_undefined": int(sum(c["hd95"] is None for c in cases)),
        "lesion_sensitivity": (n_det / n_les) if n_les else None,
        "n_lesions": int(n_les),
        "n_detected": int(n_det),
        "fp_per_image": (n_fp / n) if n else None,
        "n_false_positive": int(n_fp),
    }
