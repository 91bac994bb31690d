"""Synthetic lesion-detection slices for `meddx demo` and tests (no network needed).

Each synthetic patient has its own anatomy (body outline, an organ with smooth texture,
internal structures); its slices vary smoothly along z. Lesions are irregular blobs
(ellipses deformed by a few random harmonics) 5-15 % of the image wide, brighter or darker
than the organ; normal and lesion slices both carry vessel-like distractors so the task is
not trivial. Everything is deterministic given the seed. No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from meddx.utils import atomic_path

CLASS_NAMES: list[str] = ["normal", "lesion"]

__all__ = ["CLASS_NAMES", "make_synthetic_dataset", "make_synthetic_sequences", "write_synthetic_folder"]


# -- anatomy -------------------------------------------------------------------------

@dataclass
class _Anatomy:
    """Per-patient shape parameters in normalised coordinates ([-1, 1] across the image)."""

    body_c: tuple[float, float]
    body_ax: tuple[float, float]
    body_rot: float
    body_level: float
    organ_c: tuple[float, float]
    organ_ax: tuple[float, float]
    organ_rot: float
    organ_level: float
    structures: list[tuple[float, float, float, float, float, float]]  # cy, cx, ay, ax, rot, level
    field_seed: int


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    body_ax = (rng.uniform(0.62, 0.8), rng.uniform(0.78, 0.92))
    body_c = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    organ_ax = (rng.uniform(0.33, 0.45), rng.uniform(0.36, 0.5))
    organ_c = (body_c[0] + rng.uniform(-0.12, 0.05), body_c[1] + rng.uniform(-0.2, 0.2))
    structures = []
    # spine-like bright structure at the back, plus a few organs/cavities of varying intensity
    structures.append((body_c[0] + body_ax[0] * 0.72, body_c[1] + rng.uniform(-0.05, 0.05),
                       rng.uniform(0.08, 0.11), rng.uniform(0.09, 0.13), 0.0, rng.uniform(0.8, 0.95)))
    for _ in range(int(rng.integers(2, 4))):
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.5, 0.7)
        structures.append((body_c[0] + rad * body_ax[0] * np.sin(ang), body_c[1] + rad * body_ax[1] * np.cos(ang),
                           rng.uniform(0.1, 0.18), rng.uniform(0.1, 0.18), rng.uniform(0, np.pi),
                           rng.uniform(0.12, 0.75)))
    return _Anatomy(body_c=body_c, body_ax=body_ax, body_rot=rng.uniform(-0.2, 0.2),
                    body_level=rng.uniform(0.32, 0.4), organ_c=organ_c, organ_ax=organ_ax,
                    organ_rot=rng.uniform(-0.6, 0.6), organ_level=rng.uniform(0.48, 0.56),
                    structures=structures, field_seed=int(rng.integers(2**31)))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(t, t, indexing="ij")  # yy, xx


def _ellipse(yy: np.ndarray, xx: np.ndarray, c: tuple[float, float], ax: tuple[float, float], rot: float) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside."""
    dy, dx = yy - c[0], xx - c[1]
    cr, sr = np.cos(rot), np.sin(rot)
    u = cr * dy + sr * dx
    v = -sr * dy + cr * dx
    return np.sqrt((u / ax[0]) ** 2 + (v / ax[1]) ** 2)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise)."""
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-8)


def _blob(yy: np.ndarray, xx: np.ndarray, c: tuple[float, float], radius: float, rng_params: np.ndarray) -> np.ndarray:
    """Irregular blob: a circle whose radius is modulated by harmonics 2..5 (`rng_params` (4, 3))."""
    dy, dx = yy - c[0], xx - c[1]
    r = np.sqrt(dy**2 + dx**2)
    th = np.arctan2(dy, dx)
    mod = np.ones_like(r)
    for k, (amp, phase, _) in enumerate(rng_params, start=2):
        mod = mod + amp * np.cos(k * th + phase)
    elong = rng_params[0, 2]  # elongation factor 0.7..1.3 along a random axis
    mod = mod * (1.0 + (elong - 1.0) * np.cos(th - rng_params[1, 2]) ** 2)
    return r < radius * mod


def _lesion_shape_params(rng: np.random.Generator) -> np.ndarray:
    p = np.empty((4, 3))
    for i, k in enumerate(range(2, 6)):
        p[i] = (rng.uniform(0.0, 0.28 / k * 2), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi))
    p[0, 2] = rng.uniform(0.75, 1.3)
    return p


def _render(anat: _Anatomy, z: float, size: int, rng: np.random.Generator,
            lesion: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """One slice at position z in [-1, 1] (anatomy shrinks towards the ends); returns (image, mask)."""
    yy, xx = _grid(size)
    scale = 1.0 - 0.12 * z**2
    body_r = _ellipse(yy, xx, anat.body_c, (anat.body_ax[0] * scale, anat.body_ax[1] * scale), anat.body_rot)
    img = np.full((size, size), 0.04, np.float32)
    body = body_r < 1.0
    img[body] = anat.body_level
    # bright subcutaneous rim
    rim = (body_r > 0.9) & body
    img[rim] = anat.body_level + 0.2
    tex_sigma = max(size / 24.0, 1.0)
    img = img + body * 0.03 * _smooth_noise(rng, size, tex_sigma)

    organ_ax = (anat.organ_ax[0] * (1.0 - 0.25 * z**2), anat.organ_ax[1] * (1.0 - 0.2 * z**2))
    organ_c = (anat.organ_c[0] + 0.05 * z, anat.organ_c[1])
    organ_r = _ellipse(yy, xx, organ_c, organ_ax, anat.organ_rot + 0.1 * z)
    organ = (organ_r < 1.0) & body
    organ_tex = 0.025 * _smooth_noise(rng, size, max(size / 32.0, 0.8))
    img = np.where(organ, anat.organ_level + organ_tex, img)

    for cy, cx, ay, ax_, rot, level in anat.structures:
        s = _ellipse(yy, xx, (cy + 0.03 * z, cx), (ay * scale, ax_ * scale), rot) < 1.0
        s &= body & ~organ
        img[s] = level

    # distractors inside the organ, same for both classes: tubular vessels (bright or dark) and
    # small round cross-sections a little smaller than most lesions
    for _ in range(int(rng.integers(2, 5))):
        ang = rng.uniform(0, np.pi)
        off = rng.uniform(-0.6, 0.6)
        # a gently curved line: distance to a rotated parabola
        u = np.cos(ang) * (yy - organ_c[0]) + np.sin(ang) * (xx - organ_c[1])
        v = -np.sin(ang) * (yy - organ_c[0]) + np.cos(ang) * (xx - organ_c[1])
        curve = off * min(organ_ax) + rng.uniform(-0.6, 0.6) * u**2
        width = rng.uniform(0.012, 0.03)
        vessel = (np.abs(v - curve) < width) & organ
        img[vessel] += rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.12)
    for _ in range(int(rng.integers(1, 4))):
        c = _point_in(organ, rng, yy, xx)
        if c is None:
            break
        dot = (np.sqrt((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < rng.uniform(0.025, 0.04)) & organ
        img[dot] += rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.12)

    mask = np.zeros((size, size), bool)
    if lesion is not None and lesion["radius"] > 0:
        mask = _blob(yy, xx, lesion["center"], lesion["radius"], lesion["shape"]) & organ
        if mask.any():
            # slightly heterogeneous interior, exact support = mask
            inner = 0.85 + 0.15 * _smooth_noise(rng, size, 1.0).clip(-1, 1)
            img = img + mask * lesion["delta"] * inner

    # partial-volume blur, smooth bias field, Gaussian + speckle noise
    img = ndimage.gaussian_filter(img, 0.6)
    field = 1.0 + 0.12 * _smooth_noise(np.random.default_rng(anat.field_seed), size, size / 5.0)
    img = img * field
    img = img * (1.0 + 0.05 * rng.standard_normal(img.shape)) + 0.02 * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask


def _point_in(region: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray,
              erode: int = 0) -> tuple[float, float] | None:
    if erode:
        region = ndimage.binary_erosion(region, iterations=erode)
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return None
    k = idx[int(rng.integers(idx.size))]
    return float(yy.flat[k]), float(xx.flat[k])


def _sample_lesion(anat: _Anatomy, size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Centre well inside the organ (at z=0), diameter 5-15 % of the image, contrast +-(0.22..0.36)."""
    yy, xx = _grid(size)
    organ = _ellipse(yy, xx, anat.organ_c, (anat.organ_ax[0] * 0.65, anat.organ_ax[1] * 0.65), anat.organ_rot) < 1.0
    c = _point_in(organ, rng, yy, xx) or anat.organ_c
    diameter = rng.uniform(0.07, 0.15) * 2.0  # fraction of the image width, in normalised units
    return {"center": c, "radius": diameter / 2.0, "shape": _lesion_shape_params(rng),
            "delta": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.22, 0.36))}


def _to_dtype(images: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype) == np.uint8:
        return np.round(images * 255.0).astype(np.uint8)
    return images.astype(dtype)


# -- public API ------------------------------------------------------------------------

def make_synthetic_dataset(n: int = 1500, size: int = 64, lesion_fraction: float = 0.5, seed: int = 0,
                           slices_per_patient: int = 6, dtype: str = "float32") -> dict[str, Any]:
    """Synthetic 2D slices with/without a lesion, for the demo and tests.

    Returns a dict: `images` (n, size, size) float32 in [0, 1] (or uint8 with dtype="uint8"),
    `labels` (n,) int64 0/1 (1 = lesion), `masks` (n, size, size) uint8 exact lesion masks,
    `patient_ids` (n,) str (`slices_per_patient` consecutive slices share a patient and its
    anatomy, and the lesion of a patient keeps its place), `class_names` ["normal", "lesion"].
    """
    if n < 1 or size < 16 or not 0.0 <= lesion_fraction <= 1.0 or slices_per_patient < 1:
        raise ValueError("need n >= 1, size >= 16, 0 <= lesion_fraction <= 1, slices_per_patient >= 1")
    rng = np.random.default_rng(seed)
    n_pos = int(round(n * lesion_fraction))
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.permutation(n)[:n_pos]] = 1
    images = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    patient_ids = np.empty(n, dtype=object)
    n_patients = -(-n // slices_per_patient)
    i = 0
    for p in range(n_patients):
        prng = np.random.default_rng([seed, p])
        anat = _sample_anatomy(prng)
        lesion = _sample_lesion(anat, size, prng)
        k = min(slices_per_patient, n - i)
        zs = np.linspace(-0.6, 0.6, k) if k > 1 else np.zeros(1)
        for z in zs:
            les = None
            if labels[i]:
                les = dict(lesion)
                les["radius"] = lesion["radius"] * prng.uniform(0.85, 1.15)
            img, m = _render(anat, float(z), size, prng, les)
            if labels[i] and m.sum() < 4:  # lesion fell outside the organ at this z: force one
                les["center"] = anat.organ_c
                img, m = _render(anat, float(z), size, prng, les)
            images[i], masks[i] = img, m
            patient_ids[i] = f"P{p:04d}"
            i += 1
    return {"images": _to_dtype(images, dtype), "labels": labels, "masks": masks,
            "patient_ids": patient_ids.astype(str), "class_names": list(CLASS_NAMES)}


def make_synthetic_sequences(n_studies: int = 100, n_slices: int = 16, size: int = 64,
                             lesion_fraction: float = 0.5, seed: int = 0, min_run: int = 3,
                             dtype: str = "float32") -> dict[str, Any]:
    """Stacks of `n_slices` slices per study; in lesion studies the lesion spans a contiguous run.

    Returns `images` (N, T, size, size), `masks` (N, T, size, size) uint8, `frame_labels` (N, T)
    0/1, `labels` (N,) study label (1 = a lesion somewhere), `runs` (N, 2) [first, last+1) of the
    lesion run (0, 0 when none), `patient_ids` (N,) one patient per study, `class_names`.
    """
    if n_studies < 1 or n_slices < 2 or not 1 <= min_run <= n_slices:
        raise ValueError("need n_studies >= 1, n_slices >= 2 and 1 <= min_run <= n_slices")
    rng = np.random.default_rng(seed)
    labels = np.zeros(n_studies, dtype=np.int64)
    labels[rng.permutation(n_studies)[: int(round(n_studies * lesion_fraction))]] = 1
    images = np.empty((n_studies, n_slices, size, size), np.float32)
    masks = np.zeros((n_studies, n_slices, size, size), np.uint8)
    frame_labels = np.zeros((n_studies, n_slices), np.int64)
    runs = np.zeros((n_studies, 2), np.int64)
    zs = np.linspace(-0.8, 0.8, n_slices)
    for s in range(n_studies):
        srng = np.random.default_rng([seed, 1_000_003, s])
        anat = _sample_anatomy(srng)
        lesion = _sample_lesion(anat, size, srng)
        if labels[s]:
            length = int(srng.integers(min_run, max(min_run, n_slices // 2) + 1))
            start = int(srng.integers(0, n_slices - length + 1))
            runs[s] = (start, start + length)
        for t, z in enumerate(zs):
            les = None
            if runs[s, 0] <= t < runs[s, 1]:
                # roughly spherical: widest mid-run, never below 60 % of the nominal radius
                mid = (runs[s, 0] + runs[s, 1] - 1) / 2.0
                half = max((runs[s, 1] - runs[s, 0]) / 2.0, 1.0)
                f = np.sqrt(max(1.0 - ((t - mid) / (half + 0.5)) ** 2, 0.0))
                les = dict(lesion)
                les["radius"] = lesion["radius"] * max(f, 0.6)
            img, m = _render(anat, float(z), size, srng, les)
            if les is not None and m.sum() < 4:
                les["center"] = anat.organ_c
                img, m = _render(anat, float(z), size, srng, les)
            images[s, t], masks[s, t] = img, m
            frame_labels[s, t] = int(m.any())
    labels = (frame_labels.max(axis=1) > 0).astype(np.int64)
    return {"images": _to_dtype(images, dtype), "masks": masks, "frame_labels": frame_labels,
            "labels": labels, "runs": runs,
            "patient_ids": np.asarray([f"S{s:04d}" for s in range(n_studies)]), "class_names": list(CLASS_NAMES)}


def write_synthetic_folder(out_dir: str | Path, n: int = 1500, size: int = 64, lesion_fraction: float = 0.5,
                           seed: int = 0, slices_per_patient: int = 6) -> Path:
    """Write the synthetic slices as PNGs in `out_dir/<class>/` plus `manifest.csv`; return the manifest path.

    Layout: `normal/P0003_s02.png`, `lesion/P0003_s03.png` and the mask next to each image as
    `<name>_mask.png` (0/255; folder readers skip `*_mask.png`). `manifest.csv` has columns
    path,label,patient_id,mask with paths relative to `out_dir` and `label` the class name;
    load it with `class_names=CLASS_NAMES` to keep "lesion" as the positive class (index 1).
    """
    from PIL import Image as PILImage

    out = Path(out_dir)
    data = make_synthetic_dataset(n=n, size=size, lesion_fraction=lesion_fraction, seed=seed,
                                  slices_per_patient=slices_per_patient, dtype="uint8")
    for name in CLASS_NAMES:
        (out / name).mkdir(parents=True, exist_ok=True)
    rows = []
    counter: dict[str, int] = {}
    for img, lab, m, pid in zip(data["images"], data["labels"], data["masks"], data["patient_ids"]):
        k = counter.get(pid, 0)
        counter[pid] = k + 1
        cls = CLASS_NAMES[int(lab)]
        rel = f"{cls}/{pid}_s{k:02d}.png"
        rel_mask = f"{cls}/{pid}_s{k:02d}_mask.png"
        for arr, r in ((img, rel), (m.astype(np.uint8) * 255, rel_mask)):
            with atomic_path(out / r, suffix=".png") as tmp:
                PILImage.fromarray(arr, mode="L").save(tmp, format="PNG")
        rows.append({"path": rel, "label": cls, "patient_id": pid, "mask": rel_mask})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "patient_id", "mask"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    with atomic_path(manifest, suffix=".csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return manifest
