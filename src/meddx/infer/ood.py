"""The out-of-distribution gate: is this input something the RUN can judge?

Three layers, cheapest first:

1. `check_degenerate` refuses inputs nothing can be said about (a side under `MIN_SIDE` px, an extreme aspect
   ratio, a constant or non-finite image, a 2D image given to a 3D model) with an `InputError`, for every RUN;
2. `OodGate.metadata_reasons` compares the input with the RUN's recorded training envelope (modality,
   dimensionality, colour, size, spacing, intensity range) and names each mismatch in plain words;
3. `OodGate.feature_score` scores the model's own embedding and a thumbnail of the preprocessed input against
   the Gaussians fitted on training cases (`meddx.train.fingerprint`): > 1 is beyond what ~95 % of validation
   cases reached.

RUNs trained before fingerprints existed have no gate: their verdict is unknown (None), with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import InputError
from meddx.train.fingerprint import FINGERPRINT_KEY, FeatureModel, read_ood_arrays, thumbnail

MIN_SIDE = 8  # px; fewer per in-plane side and there is no image to judge
MAX_ASPECT = 20.0  # longest / shortest in-plane side
SIZE_FACTOR = 8.0  # an input this many times smaller / larger than every training case is out of range
SPACING_FACTOR = 3.0
NO_FINGERPRINT = "the RUN records no training fingerprint (trained before meddx checked inputs); not checked"


def _fmt_shape(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_degenerate(image: Any, model_ndim: int) -> None:
    """Refuse (InputError) an input no model can judge: too small, extreme aspect ratio, constant, NaN/inf, or a
    2D image for a 3D model."""
    shape = tuple(int(s) for s in image.spatial_shape)
    if model_ndim == 3 and image.spatial_ndim < 3:
        raise InputError(f"is a 2D image ({_fmt_shape(shape)} px); this model reads 3D volumes")
    plane = shape[-2:] if (model_ndim == 2 or len(shape) == 2) else shape
    if not plane or min(plane) < MIN_SIDE:
        raise InputError(f"is too small to read: {_fmt_shape(shape)} "
                         f"{'px' if len(shape) == 2 else 'voxels'}; a model needs at least {MIN_SIDE} per side")
    if max(plane) / max(min(plane), 1) > MAX_ASPECT:
        raise InputError(f"is not an image the model can read: {_fmt_shape(shape)} px (aspect ratio over "
                         f"{MAX_ASPECT:g}:1)")
    arr = np.asarray(image.array)
    if arr.size == 0:
        raise InputError("holds no pixels")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError("contains NaN or infinite pixel values")
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise InputError(f"is a constant image (every value {lo.item():g}): there is nothing to judge")


@dataclass
class Verdict:
    """in_distribution (None: unknown), ood_score (> 1: outside; None: not scored) and the reason in plain words."""

    in_distribution: bool | None
    ood_score: float | None
    reason: str


class OodGate:
    """A RUN's recorded training envelope and feature model (see the module docstring)."""

    def __init__(self, section: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta = section.get("metadata") or {}
        self.features = FeatureModel(arrays)

    @classmethod
    def from_run(cls, info: Any, path: str | Path | None) -> "OodGate | None":
        """The gate of a RUN, or None when it has no fingerprint (older RUNs)."""
        raw = info.to_dict() if hasattr(info, "to_dict") else dict(info)
        section = raw.get(FINGERPRINT_KEY)
        if not isinstance(section, dict) or path is None:
            return None
        arrays = read_ood_arrays(path)
        if arrays is None or not {"emb_means", "emb_precision", "threshold"} <= set(arrays):
            return None
        return cls(section, arrays)

    # -- metadata -------------------------------------------------------------------------------------------
    def metadata_reasons(self, image: Any) -> list[str]:
        """Plain-language mismatches between the input and the training envelope (empty when none)."""
        m, reasons = self.meta, []
        modalities = [str(x) for x in m.get("modalities") or []]
        if modalities and image.modality not in modalities and image.modality != "OT":
            trained = ", ".join(x if x != "OT" else "non-DICOM (PNG/JPEG/array)" for x in modalities)
            reasons.append(f"a {image.modality} study; the model was trained on {trained} images")
        trained_ndim = [int(x) for x in m.get("spatial_ndim") or []]
        if image.is_sequence and not m.get("sequence"):
            reasons.append("a sequence of frames (video / cine / 4D); the model was trained on single images")
        elif trained_ndim and image.spatial_ndim not in trained_ndim:
            reasons.append(f"a {image.spatial_ndim}D {'volume' if image.spatial_ndim == 3 else 'image'}; the model "
                           f"was trained on {'/'.join(map(str, trained_ndim))}D images")
        channels = [int(c) for c in m.get("channels") or []]
        if channels == [1] and image.n_channels >= 3 and _is_colour(image.array):
            reasons.append("a colour image; the model was trained on greyscale images")
        reasons += self._size_reasons(image)
        reasons += self._intensity_reasons(image)
        return reasons

    def _size_reasons(self, image: Any) -> list[str]:
        m = self.meta
        lo, hi = m.get("size_min"), m.get("size_max")
        shape = list(image.spatial_shape)
        if not lo or not hi:
            return []
        k = min(len(lo), len(shape))
        plane, tlo, thi = shape[-k:], lo[-k:], hi[-k:]
        out = []
        if any(s * SIZE_FACTOR < a or s > b * SIZE_FACTOR for s, a, b in zip(plane, tlo, thi)):
            span = _fmt_shape(tlo) if tlo == thi else f"{_fmt_shape(tlo)} to {_fmt_shape(thi)}"
            out.append(f"{_fmt_shape(plane)} px; the model was trained on {span} px images")
        smin, smax = m.get("spacing_min"), m.get("spacing_max")
        if smin and smax and image.has_geometry:
            sp = list(image.spacing)[-len(smin):]
            if any(s * SPACING_FACTOR < a or s > b * SPACING_FACTOR for s, a, b in zip(sp, smin, smax)):
                out.append(f"pixel spacing {' x '.join(f'{s:.2g}' for s in sp)} mm; training ranged "
                           f"{' x '.join(f'{s:.2g}' for s in smin)} to {' x '.join(f'{s:.2g}' for s in smax)} mm")
        return out

    def _intensity_reasons(self, image: Any) -> list[str]:
        it = self.meta.get("intensity") or {}
        if "low" not in it or "high" not in it:
            return []
        from meddx.train.fingerprint import _robust_range

        lo, hi = _robust_range(image.array)
        tlo, thi = float(it["low"]), float(it["high"])
        span = max(thi - tlo, 1e-6)
        if lo < tlo - span or hi > thi + span:
            return [f"intensities {lo:g} to {hi:g}; training images ranged {tlo:g} to {thi:g}"]
        return []

    # -- features -------------------------------------------------------------------------------------------
    def feature_score(self, emb: np.ndarray, x: np.ndarray) -> np.ndarray:
        """OOD score per preprocessed input row (> 1: outside)."""
        return self.features.score(emb, thumbnail(x))

    def verdict(self, image: Any, scores: np.ndarray) -> Verdict:
        """The input's verdict from its metadata and its (per-slice, for a stack) feature scores."""
        reasons = self.metadata_reasons(image)
        score = float(np.median(scores)) if len(scores) else None
        if score is not None and score > 1.0:
            reasons.append(f"its image features are unlike the training images (score {score:.2f}; above 1 is "
                           "beyond 95 % of validation cases)")
        if reasons:
            return Verdict(False, score, "; ".join(reasons))
        if score is None:  # e.g. an exported runtime, which has no embedding to score: metadata alone is not enough
            return Verdict(None, None, "metadata within the training range; image features not scored with this "
                                       "runtime (use the Keras model for a full check)")
        return Verdict(True, score, "")


def _is_colour(arr: np.ndarray) -> bool:
    a = np.asarray(arr)
    if a.shape[-1] < 3:
        return False
    step = max(1, a[..., 0].size // 100_000)
    r, g, b = (a[..., i].ravel()[::step].astype(np.float64) for i in range(3))
    return bool(np.abs(r - g).mean() + np.abs(g - b).mean() > 0.02 * (np.abs(r).mean() + 1e-6))


def gate_columns(pred: Any, allow_ood: bool = False) -> dict[str, Any]:
    """predictions.csv columns of a prediction's verdict; for an out-of-distribution input without `allow_ood`,
    `predicted` says so and the probabilities are withheld (None) -- no diagnosis."""
    cols: dict[str, Any] = {
        "in_distribution": "" if pred.in_distribution is None else bool(pred.in_distribution),
        "ood_score": "" if pred.ood_score is None else round(float(pred.ood_score), 4),
        "ood_reason": pred.ood_reason,
        "prediction_set": "" if pred.prediction_set is None else "|".join(pred.prediction_set)}
    if pred.in_distribution is False and not allow_ood:
        cols["predicted"] = f"out of distribution: {pred.ood_reason}"
        cols["prediction_set"] = ""
        cols["withheld"] = True
    return cols
