"""In-memory image classifier: probabilities, decision, Grad-CAM heatmap and lesion candidates per input.

A 2D model given a volume or a frame sequence reads it slice by slice: binary studies take the most suspicious
slice's probability, multi-class ones the mean; the heatmap is weighted by each slice's score.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.infer.base import Predictor
from meddx.infer.display import grey_display, resize_to
from meddx.infer.ood import NO_FINGERPRINT, OodGate, check_degenerate
from meddx.infer.prediction import Prediction
from meddx.models.outputs import logits_to_probs


class Classifier(Predictor):
    """A classification RUN held in memory; `heatmaps` / `method` choose the localisation made per prediction,
    `coverage` the conformal prediction sets' target coverage. Every prediction carries the OOD gate's verdict
    (`meddx.infer.ood`), temperature-calibrated probabilities and a prediction set when the RUN records them."""

    kind = "classifier"

    def __init__(self, info: Any, model: Any, preprocessing: Any, path: Any = None, heatmaps: bool = True,
                 method: str = "gradcam", coverage: float = 0.9) -> None:
        super().__init__(info, model, preprocessing, path)
        self.heatmaps = heatmaps
        self.method = method
        self.gate = OodGate.from_run(info, path)
        self._features: Any = None
        self.temperature, self.qhat, self.coverage = None, None, coverage
        calib = info.to_dict().get("calibration") if hasattr(info, "to_dict") else None
        if isinstance(calib, dict) and self.gate is not None:
            self.temperature = float(calib.get("temperature") or 1.0)
            self.set_coverage(coverage)

    def set_coverage(self, coverage: float) -> None:
        """Calibrate the conformal prediction sets for `coverage` (0-1) on the RUN's stored validation cases."""
        from meddx.errors import ConfigError

        if not 0.0 < float(coverage) < 1.0:
            raise ConfigError(f"--coverage must be between 0 and 1 (e.g. 0.9), got {coverage}")
        self.coverage = float(coverage)
        arrays = self.gate.features.a if self.gate is not None else {}
        if self.temperature is not None and "cal_probs" in arrays and "cal_labels" in arrays \
                and self.task != "multilabel":
            from meddx.evaluate.conformal import conformal_quantile

            self.qhat = conformal_quantile(arrays["cal_probs"], arrays["cal_labels"], self.coverage, "lac")

    def _embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, OOD feature scores) of a preprocessed batch in one model call (scores empty without a
        fingerprint)."""
        if self.gate is None:
            return self.predict_proba(x), np.zeros(0)
        if not hasattr(self.model, "get_layer"):  # an exported runtime: scored when the export has the embedding
            if not getattr(self.model, "has_features", False):
                return self.predict_proba(x), np.zeros(0)
            emb, logits = self.model.features(x)
            return logits_to_probs(logits, self.task), self.gate.feature_score(emb, x)
        if self._features is None:
            from meddx.train.fingerprint import feature_function

            self._features = feature_function(self.model)
        emb, logits = self._features(x)
        return logits_to_probs(logits, self.task), self.gate.feature_score(emb, x)

    def predict_proba(self, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """(N, K) class probabilities of a preprocessed batch (binary: [1 - p, p])."""
        return logits_to_probs(self.predict_logits(x, batch_size), self.task)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Predicted class index per row, using the RUN's operating threshold for binary tasks."""
        if self.task == "binary":
            t = 0.5 if self.threshold is None else self.threshold
            return (probs[:, 1] >= t).astype(int)
        return probs.argmax(axis=1)

    def _is_stack(self, image: Any) -> bool:
        if image.is_sequence and image.spatial_ndim == 3:
            raise InputError("is a 4D series; a 2D/3D classifier needs a single volume or image")
        return image.is_sequence or (image.spatial_ndim == 3 and self.spatial_ndim == 2)

    def predict(self, image: Any, heatmap: bool | None = None, method: str | None = None) -> Prediction:
        """Classify one `meddx.io.Image`; heatmap and lesions in the input's grid unless `heatmap=False`."""
        return self._predict(image, None, self.heatmaps if heatmap is None else heatmap, method or self.method)

    def predict_batch(self, images: Sequence[Any], heatmap: bool | None = None, method: str | None = None,
                      batch_size: int = 64) -> list[Prediction]:
        """`predict` for many images: single images are preprocessed together and the model called in batches."""
        heat = self.heatmaps if heatmap is None else heatmap
        for img in images:
            check_degenerate(img, self.spatial_ndim)
        single = [i for i, img in enumerate(images) if not self._is_stack(img)]
        probs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        cams: dict[int, np.ndarray] = {}
        for start in range(0, len(single), batch_size):
            chunk = single[start: start + batch_size]
            x = np.stack([self.preprocessing(images[i]) for i in chunk])
            p_all, s_all = self._embed(x)
            maps = self._batch_maps(x, p_all, method or self.method) if heat else None
            for k, i in enumerate(chunk):
                probs[i] = (p_all[k], s_all[k: k + 1])
                if maps is not None:
                    cams[i] = maps[k: k + 1]
        return [self._predict(img, probs.get(i), heat, method or self.method, cams.get(i))
                for i, img in enumerate(images)]

    def _batch_maps(self, x: np.ndarray, probs: np.ndarray, method: str) -> np.ndarray:
        """Model-resolution heatmaps of a batch of single images in one explain call (per image: ~0.1 s of graph
        building and tracing saved), for the class each image's decision localises."""
        from meddx.explain import explain

        targets = np.ones(len(x), int) if self.task == "binary" else self.decide(probs)
        return explain(self.model, x, method=method, class_index=[int(t) for t in targets])

    def _predict(self, image: Any, given: tuple[np.ndarray, np.ndarray] | None, heatmap: bool,
                 method: str, cam: np.ndarray | None = None) -> Prediction:
        check_degenerate(image, self.spatial_ndim)
        prep = self.preprocessing
        stack = self._is_stack(image)
        slice_scores = key_slices = None
        probs, ood_scores = given if given is not None else (None, np.zeros(0))
        if stack:
            x = prep.batch([image.array[k] for k in range(image.array.shape[0])], progress=False)
            each, ood_scores = self._embed(x)
            if self.task == "binary":
                slice_scores = each[:, 1]
                p = float(slice_scores.max())
                probs = np.array([1 - p, p])
                key_slices = [int(k) for k in np.argsort(-slice_scores)[:3]]
            else:
                probs = each.mean(axis=0)
                slice_scores = each.max(axis=1)
                key_slices = [int(k) for k in np.argsort(-each[:, probs.argmax()])[:3]]
        else:
            x = prep(image)[None]
            if probs is None:
                p_all, ood_scores = self._embed(x)
                probs = p_all[0]
        pred = int(self.decide(probs[None])[0])
        names = self.class_names
        result = Prediction(
            probabilities={c: float(v) for c, v in zip(names, probs)}, label=names[pred],
            probability=float(probs[pred]), threshold=self.threshold, image=image, display=grey_display(image),
            kind=self.kind, positive_class=self.info.positive_class,
            slice_scores=None if slice_scores is None else [float(v) for v in slice_scores], key_slices=key_slices)
        self._assess(result, image, probs, ood_scores)
        if heatmap:
            self._localise(result, x, probs, pred, stack, slice_scores, method, cam)
        return result

    def _assess(self, result: Prediction, image: Any, probs: np.ndarray, ood_scores: np.ndarray) -> None:
        """The OOD verdict, calibrated probabilities and conformal set of one prediction (unknown without a
        fingerprint)."""
        if self.gate is None:
            result.ood_reason = NO_FINGERPRINT
            return
        v = self.gate.verdict(image, ood_scores)
        result.in_distribution, result.ood_score, result.ood_reason = v.in_distribution, v.ood_score, v.reason
        if self.temperature is None:
            return
        from meddx.evaluate.conformal import calibrate_probs, prediction_sets, set_names

        cal = calibrate_probs(np.asarray(probs, dtype=np.float64)[None], self.temperature, self.task)[0]
        result.calibrated_probabilities = {c: float(v) for c, v in zip(self.class_names, cal)}
        if self.qhat is not None:
            result.prediction_set = set_names(prediction_sets(cal[None], self.qhat, "lac")[0], self.class_names)
            result.coverage = self.coverage

    def calibration_metrics(self, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """metrics.json's `calibration` (ECE before / after temperature scaling) and `conformal` (empirical coverage
        and mean set size of the prediction sets) on labelled cases `y` with raw probabilities `probs`; a note when
        the RUN records no calibration."""
        if self.temperature is None:
            return {"calibration": {"note": NO_FINGERPRINT}}
        from meddx.evaluate.classification import expected_calibration_error
        from meddx.evaluate.conformal import calibrate_probs, prediction_sets, set_metrics

        cal = calibrate_probs(probs, self.temperature, self.task)
        out: dict[str, Any] = {"calibration": {
            "temperature": self.temperature, "ece_before": float(expected_calibration_error(y, probs, task=self.task)),
            "ece_after": float(expected_calibration_error(y, cal, task=self.task))}}
        if self.qhat is not None:
            sets = prediction_sets(cal, self.qhat, "lac")
            out["conformal"] = {"target": self.coverage, "method": "lac", "qhat": self.qhat,
                                **set_metrics(sets, np.asarray(y).reshape(-1))}
        return out

    def _localise(self, result: Prediction, x: np.ndarray, probs: np.ndarray, pred: int, stack: bool,
                  slice_scores: np.ndarray | None, method: str, small_maps: np.ndarray | None = None) -> None:
        """Heatmap (input grid, max 1) and up to 5 lesion candidates where the decision allows a lesion
        (`small_maps`: the model-resolution maps when already computed for a batch)."""
        from meddx.explain import explain, heatmap_to_lesions

        display, image = result.display, result.image
        target = 1 if self.task == "binary" else pred
        if small_maps is None:
            small_maps = explain(self.model, x, method=method, class_index=target)
        if stack:
            weights = slice_scores if slice_scores is not None else np.ones(len(x))
            heat = np.stack([resize_to(h, display.shape[1:]).astype(np.float32) * w
                             for h, w in zip(small_maps, weights)])
        else:
            heat = resize_to(small_maps[0], display.shape).astype(np.float32)
        heat = heat / max(float(heat.max()), 1e-8)
        result.heatmap = heat.astype(np.float32)
        if self.task == "binary" and probs[1] < (self.threshold or 0.5):
            return
        spacing = image.spacing if (image.has_geometry or image.modality != "OT") else None
        if not stack:
            result.lesions = heatmap_to_lesions(heat, threshold=0.5, spacing=spacing, max_lesions=5)
            return
        # Candidates on the model-resolution stack (measured ~8 s -> <1 s for a 129x512x512 CT), with the
        # in-plane spacing scaled to match; masks are upsampled where a full-size mask is needed.
        small = np.stack([h * w for h, w in zip(small_maps, weights)])
        small = small / max(float(small.max()), 1e-8)
        scale = [1.0] + [o / s for o, s in zip(display.shape[1:], small.shape[1:])]
        sp = None if spacing is None else tuple(float(a) * f for a, f in zip(spacing, scale))
        lesions = heatmap_to_lesions(small, threshold=0.5, spacing=sp, max_lesions=5)
        for les in lesions:
            for key in ("centroid_px", "bbox_px", "extent_px", "peak_px"):
                if key in les:
                    les[key] = scale_px(les[key], scale)
            les["mask"] = full_size_mask(les, display.shape)
        result.lesions = lesions


def scale_px(value: Any, scale: Sequence[float]) -> Any:
    """Map pixel coordinates found at model resolution back to the input's pixel grid."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return type(value)(type(v)(round(x * f) for x in v) for v, f in zip(value, scale))
    if isinstance(value, (list, tuple)):
        return type(value)(round(float(v) * f, 2) for v, f in zip(value, scale))
    return value


def full_size_mask(les: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """A lesion mask at the input's full resolution (nearest-neighbour upsampling when needed)."""
    m = np.asarray(les["mask"], dtype=bool)
    if tuple(m.shape) == tuple(shape):
        return m
    factors = [t / s for t, s in zip(shape, m.shape)]
    if all(f == int(f) for f in factors):  # exact integer zoom: repeat (fast, exact nearest neighbour)
        for axis, f in enumerate(factors):
            m = m.repeat(int(f), axis=axis)
        return m
    return resize_to(m, shape, order=0).astype(bool)
