"""Readable PNG overlays: grey image + semi-transparent heatmap with colour bar, lesion outlines
and boxes, optional ground-truth outline. 2D (`save_overlay`) and 3D (`save_volume_overlay`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.utils import atomic_path

LESION_COLOUR = "#00e5ff"  # cyan: predicted lesion outlines/boxes
TRUTH_COLOUR = "#7CFC00"  # lawn green: ground-truth outline
PEAK_COLOUR = "white"


def _display_image(image: Any) -> tuple[np.ndarray, bool]:
    """(array scaled to [0, 1] by robust percentiles, is_rgb) from (H, W), (H, W, 1) or (H, W, 3)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
        rgb = True
    elif a.ndim == 2:
        rgb = False
    else:
        raise InputError(f"overlay image must be 2D (H, W[, 1|3]), got shape {np.shape(image)}")
    finite = a[np.isfinite(a)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        if hi <= lo:
            lo, hi = float(finite.min()), float(finite.max())
        a = (np.nan_to_num(a, nan=lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.clip(a, 0.0, 1.0), rgb


def _fit(heat: Any, shape: Sequence[int]) -> np.ndarray:
    """Heatmap as float in the image's spatial shape (linear resize when needed)."""
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim == len(shape) + 1 and h.shape[-1] == 1:
        h = h[..., 0]
    if h.ndim != len(shape):
        raise InputError(f"heatmap of shape {np.shape(heat)} does not match image of spatial shape {tuple(shape)}")
    h = np.nan_to_num(h)
    if h.shape != tuple(shape):
        from skimage.transform import resize

        h = resize(h, tuple(shape), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    return h


def _alpha_map(heat: np.ndarray, alpha: float, vmax: float) -> np.ndarray:
    """Per-pixel opacity: `alpha` where heat is high, fading to 0 for the coldest 15% so the
    anatomy under cold regions stays visible in plain grey."""
    return float(alpha) * np.clip(heat / (0.15 * vmax), 0.0, 1.0)


def _outline(ax: Any, mask2d: np.ndarray, colour: str, lw: float = 1.5, ls: str = "-") -> bool:
    """Draw the contours of a 2D mask; True if anything was drawn."""
    from skimage.measure import find_contours

    m = np.asarray(mask2d) != 0
    if not m.any():
        return False
    padded = np.pad(m.astype(float), 1)  # closes contours touching the border
    drawn = False
    for c in find_contours(padded, 0.5):
        ax.plot(c[:, 1] - 1, c[:, 0] - 1, color=colour, linewidth=lw, linestyle=ls)
        drawn = True
    return drawn


def _box(ax: Any, rows: tuple[int, int], cols: tuple[int, int], colour: str, text: str | None) -> None:
    from matplotlib.patches import Rectangle

    (r0, r1), (c0, c1) = rows, cols
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                           edgecolor=colour, linewidth=1.2, linestyle="--"))
    if text:
        ax.text(c0 - 0.5, r0 - 1.0, text, color="black", fontsize=8, va="bottom", ha="left",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1.0, "edgecolor": "none"})


def _lesion_label(lesion: dict[str, Any]) -> str:
    parts = [f"#{lesion.get('id', '?')}"]
    if lesion.get("score") is not None:
        parts.append(f"{lesion['score']:.2f}")
    if lesion.get("volume_ml") is not None:
        parts.append(f"{lesion['volume_ml']:.2f} mL")
    elif lesion.get("area_mm2") is not None:
        parts.append(f"{lesion['area_mm2']:.0f} mm²")
    return " ".join(parts)


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    finally:
        plt.close(fig)
    return Path(path)


def _legend(fig_or_ax: Any, have_lesions: bool, have_truth: bool, lesion_label: str = "heatmap lesion") -> None:
    from matplotlib.lines import Line2D

    handles = []
    if have_lesions:
        handles.append(Line2D([], [], color=LESION_COLOUR, lw=1.5, label=lesion_label))
    if have_truth:
        handles.append(Line2D([], [], color=TRUTH_COLOUR, lw=1.5, label="reference mask"))
    if handles:
        fig_or_ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)


def save_overlay(image2d: Any, heatmap2d: Any, path: str | Path, lesions: Sequence[dict[str, Any]] | None = None,
                 mask: Any = None, title: str | None = None, cmap: str = "jet", alpha: float = 0.5,
                 spacing: Sequence[float] | None = None, figsize: tuple[float, float] = (6.0, 5.0),
                 dpi: int = 100, value_label: str = "relevance (normalised)",
                 lesion_label: str = "heatmap lesion") -> Path:
    """Write a PNG (figsize * dpi pixels, default 600x500) of the heatmap over the grey image.

    `lesions` (from `heatmap_to_lesions`, 2D) are outlined and boxed in cyan with id/score;
    `mask` (reference/truth) is outlined in green; `spacing` (row, col mm) sets the pixel aspect;
    `value_label` names the colour bar and `lesion_label` the cyan outlines (e.g. a segmentation's
    "lesion probability" / "segmented lesion").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, rgb = _display_image(image2d)
    heat = _fit(heatmap2d, img.shape[:2])
    aspect = float(spacing[0]) / float(spacing[1]) if spacing is not None else 1.0
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    ax.imshow(img, cmap=None if rgb else "gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
    vmax = max(1.0, float(heat.max()))
    hm = ax.imshow(heat, cmap=cmap, alpha=_alpha_map(heat, alpha, vmax), vmin=0.0, vmax=vmax,
                   interpolation="bilinear", aspect=aspect)
    cbar = fig.colorbar(hm, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(value_label)
    have_lesions = False
    for lesion in lesions or ():
        lmask = lesion.get("mask")
        if lmask is not None and np.ndim(lmask) == 2:
            have_lesions |= _outline(ax, lmask, LESION_COLOUR)
        bbox = lesion.get("bbox_px")
        if bbox is not None and len(bbox) == 2:
            _box(ax, tuple(bbox[0]), tuple(bbox[1]), LESION_COLOUR, _lesion_label(lesion))
            have_lesions = True
    have_truth = False
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        if m.shape != img.shape[:2]:
            raise InputError(f"mask of shape {m.shape} does not match image of shape {img.shape[:2]}")
        have_truth = _outline(ax, m, TRUTH_COLOUR, lw=1.5, ls=":")
    _legend(ax, have_lesions, have_truth, lesion_label)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)


def _plane(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(arr, index, axis=axis)


def save_volume_overlay(volume: Any, heatmap: Any, path: str | Path, lesions: Sequence[dict[str, Any]] | None = None,
                        mask: Any = None, title: str | None = None, spacing: Sequence[float] | None = None,
                        mode: str = "orthogonal", n_slices: int = 6, cmap: str = "jet", alpha: float = 0.5,
                        dpi: int = 100, value_label: str = "relevance (normalised)",
                        lesion_label: str = "heatmap lesion") -> Path:
    """Write a PNG of a 3D (z, y, x) heatmap over the volume.

    mode "orthogonal": axial/coronal/sagittal planes through the peak-heat voxel (crosshair).
    mode "montage": the `n_slices` axial slices with the most heat, in z order.
    Lesion masks (3D, from `heatmap_to_lesions`) are outlined in cyan, `mask` in green; `spacing`
    (z, y, x mm) gives each plane its true aspect ratio.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise InputError(f"volume overlay needs a 3D (z, y, x) array, got shape {np.shape(volume)}")
    heat = _fit(heatmap, vol.shape)
    disp, _ = _display_image(vol.reshape(vol.shape[0], -1))
    disp = disp.reshape(vol.shape)
    truth = None
    if mask is not None:
        truth = np.asarray(mask)
        if truth.ndim == 4 and truth.shape[-1] == 1:
            truth = truth[..., 0]
        if truth.shape != vol.shape:
            raise InputError(f"mask of shape {truth.shape} does not match volume of shape {vol.shape}")
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
    lesion_masks = [np.asarray(l["mask"]) for l in (lesions or ()) if np.ndim(l.get("mask")) == 3]
    vmax = max(1.0, float(heat.max()))

    if mode == "orthogonal":
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        # (slice axis, name, (row axis, col axis)) for axial, coronal, sagittal
        planes = [(0, "axial z", (1, 2)), (1, "coronal y", (0, 2)), (2, "sagittal x", (0, 1))]
        fig, axes = plt.subplots(1, 3, figsize=(12.0, 4.6), dpi=dpi)
        panels = []
        for ax, (axis, name, (r, c)) in zip(axes, planes):
            idx = int(peak[axis])
            panels.append((ax, axis, idx, f"{name}={idx}", sp[r] / sp[c], (peak[r], peak[c])))
    elif mode == "montage":
        k = max(1, min(int(n_slices), vol.shape[0]))
        order = np.argsort(-heat.reshape(vol.shape[0], -1).max(axis=1), kind="stable")[:k]
        chosen = sorted(int(z) for z in order)
        cols = min(k, 3)
        rows = int(np.ceil(k / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.8 * rows + 0.6), dpi=dpi, squeeze=False)
        for ax in axes.ravel()[k:]:
            ax.axis("off")
        panels = [(ax, 0, z, f"axial z={z} (max {heat[z].max():.2f})", sp[1] / sp[2], None)
                  for ax, z in zip(axes.ravel(), chosen)]
    else:
        raise InputError(f"unknown volume overlay mode '{mode}'; choose 'orthogonal' or 'montage'")

    hm = None
    have_lesions = have_truth = False
    for ax, axis, idx, label, aspect, cross in panels:
        ax.imshow(_plane(disp, axis, idx), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
        hplane = _plane(heat, axis, idx)
        hm = ax.imshow(hplane, cmap=cmap, alpha=_alpha_map(hplane, alpha, vmax), vmin=0.0, vmax=vmax,
                       interpolation="bilinear", aspect=aspect)
        for lm in lesion_masks:
            have_lesions |= _outline(ax, _plane(lm, axis, idx), LESION_COLOUR)
        if truth is not None:
            have_truth |= _outline(ax, _plane(truth, axis, idx), TRUTH_COLOUR, ls=":")
        if cross is not None:
            ax.axhline(cross[0], color=PEAK_COLOUR, lw=0.6, alpha=0.7)
            ax.axvline(cross[1], color=PEAK_COLOUR, lw=0.6, alpha=0.7)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(hm, ax=[p[0] for p in panels], fraction=0.025, pad=0.02).set_label(value_label)
    _legend(panels[0][0], have_lesions, have_truth, lesion_label)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi)
