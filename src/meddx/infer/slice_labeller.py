"""In-memory slice labeller: which slices of a stack hold the lesion, and its extent along the stack.

A RUN of kind `slice_labeller` (`meddx train DATA --task slice-labelling`) holds a per-pixel lesion scorer
(`slice_scorer.npz`: tree arrays, read with `allow_pickle=False`), a per-slice classifier and an HMM/CRF smoother
(`slice_labeller.json`). `predict(image)` scores every slice (raw probability, `slice_scores`) and labels each
slice from the whole stack's probabilities (smoothed labels and their runs in `details`). No Keras involved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.infer.base import Predictor, read_run_info
from meddx.infer.display import grey_display
from meddx.infer.prediction import Prediction
from meddx.io.run_info import RunInfo

__all__ = ["SliceLabeller", "stack_array"]


def stack_array(image: Any) -> np.ndarray:
    """The slices (T, H, W[, C]) of a slice stack / sequence of 2D frames, or of a 3D volume along its first axis."""
    arr = np.asarray(image.array)
    ndim = int(getattr(image, "spatial_ndim", 2))
    if getattr(image, "is_sequence", False) and ndim == 2:
        return arr
    if not getattr(image, "is_sequence", False) and ndim == 3:
        return arr
    src = getattr(image, "source", "") or None
    raise InputError(f"not a slice stack (shape {arr.shape}): give a folder of numbered slices or a 3D volume", src)


class SliceLabeller(Predictor):
    """A slice-labelling RUN held in memory (see the module docstring)."""

    kind = "slice_labeller"

    def __init__(self, info: RunInfo, scorer: Any, classifier: Any, smoother: Any, path: Path | None = None) -> None:
        super().__init__(info, None, None, path)
        self.settings = info.slice_labelling
        self.scorer = scorer
        self.classifier = classifier
        self.smoother = smoother

    @classmethod
    def load(cls, run_dir: str | Path, **options: Any) -> "SliceLabeller":
        """The RUN in `run_dir`; clear one-line errors when it is not a complete slice-labelling RUN."""
        info, p = read_run_info(run_dir)
        return cls.from_info(info, p, **options)

    @classmethod
    def from_info(cls, info: RunInfo, p: Path, **options: Any) -> "SliceLabeller":
        """The slice labeller whose run.json (`info`) was read from the RUN folder `p`: its scorer and smoother."""
        from meddx.classic.slice_export import LinearSliceClassifier, load_scorer, load_smoother

        if info.kind != cls.kind:
            raise InputError(f"is a {info.kind} RUN, not a {cls.kind}", p)
        s = info.slice_labelling
        try:
            with np.load(p / s.scorer_file, allow_pickle=False) as z:
                scorer = load_scorer({k: z[k] for k in z.files})
            params = json.loads((p / s.model_file).read_text(encoding="utf-8"))
            classifier = LinearSliceClassifier(params["classifier"])
            smoother = load_smoother(params["smoother"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"incomplete slice-labelling RUN: {exc}", p) from None
        return cls(info, scorer, classifier, smoother, p)

    def frames_of(self, stack: np.ndarray) -> np.ndarray:
        """Raw slices (T, H, W[, C]) as the RUN was trained on them: (T, size, size, channels) in [0, 1]."""
        from meddx.classic.slice_labelling import stack_frames

        return stack_frames(stack, self.settings.frame_size, self.settings.channels)

    def label_frames(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Prepared slices (see `frames_of`) -> raw per-slice probability and label, smoothed probability and label."""
        feats = self.scorer.slice_features([frames])[0]
        raw = self.classifier.predict_proba(feats)[:, 1]
        smoothed = self.smoother.predict([raw])[0].astype(np.int64)
        smoothed_p = self.smoother.predict_proba([raw])[0]
        return {"raw_probability": raw, "raw_label": (raw >= self.settings.raw_threshold).astype(np.int64),
                "smoothed_probability": np.asarray(smoothed_p, np.float64), "label": smoothed}

    def predict(self, image: Any, numbers: Sequence[int] | None = None, **_: Any) -> Prediction:
        """Label every slice of one stack. `numbers`: the slices' own numbers (e.g. from file names; default
        0..T-1). `slice_scores` are the raw per-slice probabilities; `details` holds the smoothed labels, their
        runs and the lesion's extent (first/last slice number, count). The stack is "lesion" when any slice is."""
        from meddx.classic.slice_labelling import lesion_extent

        stack = stack_array(image)
        if stack.shape[0] < 1:
            raise InputError("the stack holds no slices", getattr(image, "source", None) or None)
        nums = np.arange(stack.shape[0]) if numbers is None else np.asarray(numbers)
        if len(nums) != stack.shape[0]:
            raise ValueError(f"{len(nums)} slice numbers for {stack.shape[0]} slices")
        out = self.label_frames(self.frames_of(stack))
        ext = lesion_extent(out["label"], nums)
        names = self.class_names
        p_lesion = float(out["smoothed_probability"].max())
        label = names[1] if ext["n_positive"] else names[0]
        lesion_idx = np.flatnonzero(out["label"])
        order = lesion_idx[np.argsort(-out["raw_probability"][lesion_idx], kind="stable")] if lesion_idx.size \
            else np.argsort(-out["raw_probability"], kind="stable")
        threshold = getattr(self.smoother, "threshold_", None)
        details = {
            "smoother": self.settings.smoother,
            "slice_numbers": [int(v) for v in nums],
            "slice_labels": [int(v) for v in out["label"]],
            "slice_labels_raw": [int(v) for v in out["raw_label"]],
            "slice_probability_smoothed": [float(v) for v in out["smoothed_probability"]],
            "n_slices": int(stack.shape[0]), "n_lesion_slices": int(ext["n_positive"]),
            "n_lesion_slices_raw": int(out["raw_label"].sum()),
            "first_slice": None if ext["first"] is None else int(nums[ext["first"]]),
            "last_slice": None if ext["last"] is None else int(nums[ext["last"]]),
            "first_index": ext["first"], "last_index": ext["last"],
            "lesion_runs": [list(r) for r in ext["runs"]],  # [start, stop) indices
            "lesion_runs_numbers": [list(r) for r in ext.get("runs_numbers", [])],  # [first, last] slice numbers
        }
        return Prediction(
            probabilities={names[0]: 1.0 - p_lesion, names[1]: p_lesion}, label=label,
            probability=p_lesion if label == names[1] else 1.0 - p_lesion,
            threshold=self.settings.raw_threshold if threshold is None else float(threshold), image=image,
            display=grey_display(image), kind=self.kind, positive_class=self.info.positive_class,
            slice_scores=[float(v) for v in out["raw_probability"]], key_slices=[int(k) for k in order[:3]],
            details=details)
