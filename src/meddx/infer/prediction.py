"""A prediction for one study, in the input's geometry: what a predictor returns and a report renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Prediction:
    """Probabilities by class name, the decision, and where the finding is, in the input image's own grid.

    `heatmap` (classifiers: Grad-CAM family, 0-1) and `mask` / `probability_map` (segmenters) have the input's
    spatial shape; `lesions` are candidate regions (pixel and, when the spacing is known, physical sizes);
    `slice_scores` / `key_slices` describe a stack read slice by slice; `frame_importance` a sequence's frames.
    """

    probabilities: dict[str, float]
    label: str
    probability: float  # of `label`
    threshold: float | None
    image: Any  # the meddx.io.Image predicted on
    display: np.ndarray  # grey 0-1 view of the input for overlays
    kind: str = "classifier"  # classifier | segmenter | sequence_classifier
    positive_class: str | None = None
    heatmap: np.ndarray | None = None
    lesions: list[dict[str, Any]] = field(default_factory=list)
    mask: np.ndarray | None = None
    probability_map: np.ndarray | None = None
    slice_scores: list[float] | None = None
    key_slices: list[int] | None = None
    frame_importance: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific figures (lesion volume, notes ...)
    in_distribution: bool | None = None  # the OOD gate's verdict (None: the RUN has no fingerprint)
    ood_score: float | None = None  # > 1: outside what ~95 % of validation cases reached
    ood_reason: str = ""  # why out of distribution, or why not checked
    prediction_set: list[str] | None = None  # split-conformal set at the coverage asked (None: not calibrated)
    calibrated_probabilities: dict[str, float] | None = None  # temperature-scaled (None: not calibrated)
    coverage: float | None = None  # the conformal set's target coverage

    @property
    def class_names(self) -> list[str]:
        return list(self.probabilities)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(self.image.spacing)

    def to_study(self, source: str) -> dict[str, Any]:
        """The dict `meddx.report` renders for one study read from `source`."""
        study: dict[str, Any] = {
            "source": str(source), "image": self.image, "display": self.display,
            "probs": list(self.probabilities.values()), "class_names": self.class_names,
            "predicted": self.label, "probability": self.probability, "positive_class": self.positive_class,
            "threshold": self.threshold, "heatmap": self.heatmap, "lesions": self.lesions,
            "slice_scores": self.slice_scores, "key_slices": self.key_slices, "spacing": self.spacing,
        }
        if self.kind == "segmenter":
            study["kind"] = "segmentation"
        study.update(in_distribution=self.in_distribution, ood_score=self.ood_score, ood_reason=self.ood_reason,
                     prediction_set=self.prediction_set, calibrated_probabilities=self.calibrated_probabilities,
                     coverage=self.coverage)
        if self.frame_importance is not None:
            study["frame_importance"] = [float(v) for v in self.frame_importance]
        study.update(self.details)
        return study
