"""Handcrafted image features for the scikit-learn baselines.

Per image: first-order intensity statistics, GLCM texture (skimage graycomatrix/graycoprops),
a uniform-LBP histogram and a HOG descriptor on a fixed-size resampled copy, so every image
gives the same feature length whatever its size. 2D grayscale or RGB (converted to gray);
3D volumes are described slice-wise along axis 0 and aggregated (mean and std over slices).
"""

from __future__ import annotations

import sys
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

GLCM_PROPS: tuple[str, ...] = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_DISTANCES: tuple[int, ...] = (1, 2)
GLCM_ANGLES: tuple[float, ...] = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_LEVELS = 32
LBP_P, LBP_R = 8, 1.0
HOG_SIZE = 32  # images are resampled to HOG_SIZE x HOG_SIZE for HOG
HOG_CELL = 8
PERCENTILES: tuple[float, ...] = (1, 5, 25, 50, 75, 95, 99)

__all__ = ["feature_names", "image_features", "extract_features", "to_gray_2d"]


def to_gray_2d(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3|4) -> float (H, W) in [0, 1] (rescaled from its dtype range)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        if a.shape[-1] == 1:
            a = a[..., 0]
        else:
            gray = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            a = np.rint(gray) if np.issubdtype(a.dtype, np.integer) else gray
    if a.ndim != 2:
        raise ValueError(f"expected a 2D grayscale or RGB image, got shape {np.shape(image)}")
    a = a.astype(np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        info = np.iinfo(np.asarray(image).dtype)
        return (a - info.min) / float(info.max - info.min) if info.max > 1 else a
    lo, hi = np.nanmin(a), np.nanmax(a)
    if lo >= 0.0 and hi <= 1.0:
        return np.nan_to_num(a)
    return np.nan_to_num((a - lo) / (hi - lo)) if hi > lo else np.zeros_like(a)


def _first_order(g: np.ndarray) -> np.ndarray:
    v = g.ravel()
    hist, _ = np.histogram(v, bins=32, range=(0.0, 1.0))
    p = hist[hist > 0] / v.size
    std = v.std()
    if std > 1e-12:
        skew, kurt = float(stats.skew(v)), float(stats.kurtosis(v))
    else:
        skew, kurt = 0.0, 0.0
    return np.concatenate([[v.mean(), std, v.min(), v.max()], np.percentile(v, PERCENTILES),
                           [skew, kurt, float(-(p * np.log2(p)).sum())]])


def _glcm(g: np.ndarray) -> np.ndarray:
    from skimage.feature import graycomatrix, graycoprops

    q = np.minimum((g * GLCM_LEVELS).astype(np.uint8), GLCM_LEVELS - 1)
    m = graycomatrix(q, distances=GLCM_DISTANCES, angles=GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True,
                     normed=True)
    out = []
    for prop in GLCM_PROPS:
        v = graycoprops(m, prop)  # (distances, angles)
        v = np.nan_to_num(v, nan=1.0 if prop == "correlation" else 0.0)
        out.extend([*v.mean(axis=1), *np.ptp(v, axis=1)])  # rotation-averaged mean and range per distance
    return np.asarray(out)


def _lbp(g: np.ndarray) -> np.ndarray:
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(np.rint(g * 255).astype(np.uint8), LBP_P, LBP_R, method="uniform")
    hist, _ = np.histogram(codes, bins=LBP_P + 2, range=(0, LBP_P + 2))
    return hist / max(codes.size, 1)


def _hog(g: np.ndarray) -> np.ndarray:
    from skimage.feature import hog
    from skimage.transform import resize

    r = resize(g, (HOG_SIZE, HOG_SIZE), order=1, anti_aliasing=True, preserve_range=True)
    return hog(r, orientations=9, pixels_per_cell=(HOG_CELL, HOG_CELL), cells_per_block=(2, 2),
               block_norm="L2-Hys", feature_vector=True)


def _features_2d(g: np.ndarray) -> np.ndarray:
    return np.concatenate([_first_order(g), _glcm(g), _lbp(g), _hog(g)])


def feature_names() -> list[str]:
    """Names of the 2D feature vector entries, in order (3D doubles them as mean_/std_)."""
    names = ["mean", "std", "min", "max", *[f"p{int(p)}" for p in PERCENTILES], "skew", "kurtosis", "entropy"]
    for prop in GLCM_PROPS:
        names += [f"glcm_{prop}_d{d}_mean" for d in GLCM_DISTANCES]
        names += [f"glcm_{prop}_d{d}_range" for d in GLCM_DISTANCES]
    names += [f"lbp_{i}" for i in range(LBP_P + 2)]
    n_cells = HOG_SIZE // HOG_CELL
    names += [f"hog_{i}" for i in range((n_cells - 1) ** 2 * 4 * 9)]
    return names


def image_features(image: np.ndarray, volume: bool | None = None) -> np.ndarray:
    """Feature vector of one image: 2D gray (H, W), RGB (H, W, 3), or a 3D volume (D, H, W[, C]).

    `volume=None` guesses: 3 dimensions with a last axis not in (1, 3, 4), or 4 dimensions, is a volume.
    """
    a = np.asarray(image)
    if volume is None:
        volume = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4))
    if not volume:
        return _features_2d(to_gray_2d(a)).astype(np.float32)
    if a.ndim not in (3, 4):
        raise ValueError(f"expected a 3D volume (D, H, W[, C]), got shape {a.shape}")
    if a.ndim == 4:
        g = np.stack([to_gray_2d(s) for s in a])
    else:  # scale the whole volume at once so slices share one intensity range
        g = to_gray_2d(a.reshape(a.shape[0], -1)).reshape(a.shape)
    per_slice = np.stack([_features_2d(s) for s in g])
    return np.concatenate([per_slice.mean(axis=0), per_slice.std(axis=0)]).astype(np.float32)


def extract_features(images: Iterable[np.ndarray] | np.ndarray, volume: bool | None = None,
                     progress: bool = True, desc: str = "features") -> np.ndarray:
    """(N, F) float32 features for many images (array with a leading N axis, or any iterable).

    `progress`: show a progress bar on stderr; never shown when stderr is not a terminal (logs, pipes)."""
    from tqdm.auto import tqdm

    seq: Sequence[np.ndarray] | np.ndarray = images if hasattr(images, "__len__") else list(images)
    n = len(seq)
    if n == 0:
        return np.zeros((0, len(feature_names())), np.float32)
    rows = [image_features(im, volume=volume) for im in tqdm(seq, total=n, desc=desc, leave=False,
                                                              disable=not (progress and _stderr_is_tty()))]
    return np.stack(rows).astype(np.float32)


def _stderr_is_tty() -> bool:
    """True when stderr is a terminal (progress bars only go there)."""
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
