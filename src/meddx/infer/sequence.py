"""In-memory sequence classifier over a study's frames (video, cine, slice stack): probabilities, decision and
which frames drove it (the model's attention over frames).

Frames are sampled as the RUN was trained (`RunInfo.sequence`: `frames` evenly spaced, or all), each frame
preprocessed as a 2D image; a study shorter than `frames` is padded with all-zero frames, which the sequence
models mask out exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.infer.base import Predictor
from meddx.infer.display import grey_display
from meddx.infer.prediction import Prediction
from meddx.models.outputs import logits_to_probs
from meddx.transforms.frames import frame_count, sampled_display, sequence_input


class SequenceClassifier(Predictor):
    """A sequence-classification RUN held in memory."""

    kind = "sequence_classifier"

    def frames_of(self, image: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model input (1, T, H, W, C), frame mask (1, T), the input frame index of each model frame)."""
        settings = self.info.sequence
        x, mask, idx = sequence_input(image, self.preprocessing, settings.frames if settings else None,
                                      settings.sampling if settings else "all")
        return x[None], mask[None], idx

    def predict(self, image: Any, heatmap: bool | None = None, method: str | None = None) -> Prediction:
        """Classify one sequence; `frame_importance` (one weight per input frame, 0 for unsampled ones) and the
        three most important frames as `key_slices` (`heatmap` / `method` are accepted for a uniform call and
        not used yet: frame importance is always given)."""
        from meddx.models.sequence import frame_importance

        x, mask, idx = self.frames_of(image)
        probs = logits_to_probs(self.predict_logits(x), self.task)[0]
        if self.task == "binary":
            pred = int(probs[1] >= (0.5 if self.threshold is None else self.threshold))
        else:
            pred = int(probs.argmax())
        weights = frame_importance(self.model, x, mask)[0][: len(idx)]
        per_frame = np.zeros(frame_count(image), np.float64)  # a lazy video is not decoded whole
        np.add.at(per_frame, idx, weights)
        names = self.class_names
        display = sampled_display(image, idx)
        if display is None:
            display = grey_display(image)
        return Prediction(
            probabilities={c: float(v) for c, v in zip(names, probs)}, label=names[pred],
            probability=float(probs[pred]), threshold=self.threshold, image=image, display=display,
            kind=self.kind, positive_class=self.info.positive_class, frame_importance=per_frame,
            key_slices=[int(k) for k in np.argsort(-per_frame, kind="stable")[:3]],
            slice_scores=[float(v) for v in per_frame])
