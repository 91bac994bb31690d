"""A picture of segmentations: each case's image with the truth (green) and prediction (red) outlined."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from meddx.utils import atomic_path


def save_segmentation_panel(cases: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, str]], path: Path) -> Path:
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
