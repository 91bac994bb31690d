"""In-memory lesion segmenter: probability map, mask and lesions (mm / mL when the spacing is known) per input.

2D models predict resized whole images (their probability resized back to the input's grid); 3D models predict
sliding windows over the native grid. A volume given to a 2D model is segmented slice by slice and stack
post-processed as one stack. Options are constructor arguments: `tta` (flip test-time augmentation over the
flips the model was trained with) and `stack_min_fraction` (replaces the RUN's own stack post-processing).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.infer.base import Predictor
from meddx.infer.display import middle_channel_display, resize_to
from meddx.infer.prediction import Prediction
from meddx.models.sliding_window import sliding_window_predict
from meddx.train.seg_data import native_prep, spacing_of
from meddx.train.seg_pipeline import flip_axes
from meddx.transforms.post import drop_minor_components, postprocess_mask

SEG_CLASS_NAMES = ["background", "lesion"]


class Segmenter(Predictor):
    """A segmentation RUN held in memory (see the module docstring for `tta` and `stack_min_fraction`)."""

    kind = "segmenter"

    def __init__(self, info: Any, model: Any, preprocessing: Any, path: Any = None, tta: bool = False,
                 stack_min_fraction: float | None = None) -> None:
        super().__init__(info, model, preprocessing, path)
        self.settings = dataclasses.replace(info.segmentation)
        if stack_min_fraction is not None:
            from meddx.train.config import check_stack_min_fraction

            if self.spatial_ndim != 2:
                raise ConfigError("--stack-min-fraction applies to 2D segmentation runs only", path)
            check_stack_min_fraction(stack_min_fraction, "--stack-min-fraction")
            self.settings.stack_min_fraction = float(stack_min_fraction)
        self.tta_axes: list[int] = self._tta_axes() if tta else []

    def _tta_axes(self) -> list[int]:
        augment = str(self.info.config.get("augment") or "none")
        axes = flip_axes(augment, self.spatial_ndim)
        if not axes:
            raise ConfigError(f"--tta averages over the flips a model was trained with; this run was trained with "
                              f"--augment {augment} (no flips)", self.path)
        return axes

    @property
    def threshold(self) -> float:
        return float(self.info.threshold or 0.5)

    @property
    def sliding(self) -> bool:
        return self.settings.inference == "sliding_window"

    def model_probability(self, x: np.ndarray) -> np.ndarray:
        """Lesion probability at the model's grid for one preprocessed case `x` (*spatial, C); with TTA the mean
        over the unflipped input and one flip per trained flip axis."""
        def once(a: np.ndarray) -> np.ndarray:
            if self.sliding:
                logits = sliding_window_predict(self.model, a, self.settings.patch, self.settings.overlap)[..., 0]
            else:
                call = getattr(self.model, "predict_on_batch", None)  # Keras: no tf.data pipeline per call
                logits = np.asarray(call(a[None]) if call else self.model.predict(a[None], verbose=0))[0, ..., 0]
            return 1.0 / (1.0 + np.exp(-logits))

        prob = once(x)
        for ax in self.tta_axes:
            prob = prob + np.flip(once(np.ascontiguousarray(np.flip(x, ax))), ax)
        return prob / (1 + len(self.tta_axes))

    def segment_array(self, x: np.ndarray, native_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(probability, binary mask) in `native_shape` for one preprocessed case `x`."""
        prob = self.model_probability(x)
        if not self.sliding:
            prob = resize_to(prob, native_shape, order=1)
        assert prob.ndim == self.spatial_ndim
        return self._finish(prob)

    def _finish(self, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = postprocess_mask(prob >= self.threshold, int(self.settings.min_size or 0), self.settings.keep_largest)
        return prob.astype(np.float32), mask

    def preprocess(self, image: Any) -> np.ndarray:
        """The model's input for an image of the model's dimensionality (3D: the native grid, normalised)."""
        spatial = tuple(int(s) for s in image.spatial_shape)
        return native_prep(self.preprocessing, spatial)(image) if self.sliding else self.preprocessing(image)

    def segment(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probability map, mask) in the input's grid; a volume through a 2D model is one post-processed stack."""
        if image.is_sequence:
            raise InputError("is a sequence (video / 4D series); a segmenter needs an image or a volume")
        n = self.spatial_ndim
        spatial = tuple(int(s) for s in image.spatial_shape)
        if image.spatial_ndim == n:
            return self.segment_array(self.preprocess(image), spatial)
        if image.spatial_ndim == 3 and n == 2:
            probs = []
            for k in range(spatial[0]):
                xk = self.preprocessing.batch([image.array[k]], progress=False)[0]
                probs.append(resize_to(self.model_probability(xk), spatial[1:], order=1))
            prob, mask = self._finish(np.stack(probs))
            return prob, drop_minor_components(mask, self.settings.stack_min_fraction)
        raise InputError(f"is a {image.spatial_ndim}D image; this segmenter is {n}D")

    def predict(self, image: Any) -> Prediction:
        """Segment one `meddx.io.Image`: mask, probability map, one lesion per connected component."""
        from meddx.explain.lesions import mask_to_lesions
        from meddx.infer.ood import check_degenerate

        check_degenerate(image, self.spatial_ndim)  # too small / constant / NaN: refused, as for classifiers
        prob, mask = self.segment(image)
        spacing = spacing_of(image)
        lesions = mask_to_lesions(mask, spacing=spacing, connectivity=mask.ndim)  # as postprocess_mask counts
        voxel = float(np.prod(spacing)) if spacing else None
        peak = float(prob.max()) if prob.size else 0.0
        found = bool(mask.any())
        for les in lesions:
            values = prob[les["mask"]]
            les["score"], les["score_mean"] = float(values.max()), float(values.mean())
        slice_scores = key_slices = None
        if prob.ndim == 3:
            slice_scores = [float(v) for v in prob.reshape(len(prob), -1).max(axis=1)]
            area = mask.reshape(len(mask), -1).sum(axis=1)
            order = np.argsort(-area, kind="stable") if found else np.argsort(-np.asarray(slice_scores), kind="stable")
            key_slices = [int(k) for k in order[:3] if not found or area[k] > 0]
        note = None
        if not found and peak >= self.threshold:
            note = (f"The peak lesion probability {peak:.3f} is above the threshold {self.threshold:.2f} only in "
                    f"components smaller than {int(self.settings.min_size or 0)} px, which post-processing removes.")
        s = self.settings
        details = {
            "n_lesions": len(lesions), "n_voxels": int(mask.sum()),
            "volume_ml": None if voxel is None else float(mask.sum() * voxel / 1000.0),
            "units": "mm" if spacing else "px", "physical_spacing": spacing, "note": note,
            "postprocess": {"min_size": s.min_size, "keep_largest": s.keep_largest,
                            "stack_min_fraction": s.stack_min_fraction},
            "tta_flip_axes": list(self.tta_axes),
        }
        return Prediction(
            probabilities={"background": 1.0 - peak, "lesion": peak}, label="lesion" if found else "normal",
            probability=peak if found else 1.0 - peak, threshold=self.threshold, image=image,
            display=middle_channel_display(image), kind=self.kind, positive_class="lesion", heatmap=prob,
            lesions=lesions, mask=mask, probability_map=prob, slice_scores=slice_scores, key_slices=key_slices,
            details=details)
