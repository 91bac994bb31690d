"""The inference layer: a trained RUN held in memory, predicting on `meddx.io.Image` values.

`load(run_dir)` returns the RUN's predictor (`Classifier`, `Segmenter`, `SequenceClassifier` or `SliceLabeller`);
each has `.predict(image) -> Prediction` (probabilities by class name, decision, heatmap / mask / lesions in the input's
geometry) and `.predict_batch(images)`. The CLI, reports, the service and batch jobs all predict through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddx.infer.base import Predictor, load_keras_parts, read_run_info
from meddx.infer.classifier import Classifier
from meddx.infer.prediction import Prediction
from meddx.infer.segmenter import Segmenter
from meddx.infer.sequence import SequenceClassifier
from meddx.infer.slice_labeller import SliceLabeller
from meddx.io.run_info import RunInfo

PREDICTORS: dict[str, type[Predictor]] = {
    "classifier": Classifier, "segmenter": Segmenter, "sequence_classifier": SequenceClassifier,
    "slice_labeller": SliceLabeller}
OWN_LOADERS = ("slice_labeller",)  # kinds without a Keras model.keras: their class reads the RUN itself

__all__ = ["Classifier", "Prediction", "Predictor", "RunInfo", "Segmenter", "SequenceClassifier", "SliceLabeller",
           "load"]


def load(run_dir: str | Path, tta: bool = False, stack_min_fraction: float | None = None, runtime: str = "keras",
         **options: Any) -> Predictor:
    """The predictor for the RUN in `run_dir` (kind from its run.json). A segmenter takes `tta` (flip test-time
    augmentation) and `stack_min_fraction` (replaces the RUN's stack post-processing); `options` go to the
    constructor (e.g. `heatmaps=False` for a classifier). `runtime` onnx | openvino (| savedmodel | litert): a
    classifier predicting through the RUN's exported model (`meddx export`; `meddx.infer.runtimes.load_runtime`)."""
    from meddx.errors import ConfigError

    if runtime != "keras":
        if tta or stack_min_fraction is not None:
            raise ConfigError(f"--tta and --stack-min-fraction need --runtime keras, not {runtime}")
        from meddx.infer.runtimes import load_runtime

        return load_runtime(run_dir, runtime, **options)
    info, path = read_run_info(run_dir)
    cls = PREDICTORS[info.kind]
    if info.kind in OWN_LOADERS:
        if tta or stack_min_fraction is not None:
            raise ConfigError("--tta and --stack-min-fraction apply to segmentation runs only", path)
        return cls.from_info(info, path, **options)
    model, prep = load_keras_parts(info, path)
    if cls is Segmenter:
        options.update(tta=tta, stack_min_fraction=stack_min_fraction)
    elif tta:
        raise ConfigError("--tta is implemented for segmentation runs only", path)
    elif stack_min_fraction is not None:
        raise ConfigError("--stack-min-fraction applies to 2D segmentation runs only", path)
    return cls(info, model, prep, path, **options)
