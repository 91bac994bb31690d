"""`meddx export`: a RUN's Keras model as a SavedModel, ONNX, OpenVINO IR or LiteRT file, checked against Keras.

The export is written to a temporary folder beside `--out`, run on the RUN's validation images (or, when the RUN's
data are not reachable, on deterministic synthetic inputs) next to the Keras model, and renamed onto `--out` only
when the largest output difference is within the tolerance: a refused export leaves nothing that looks complete.
`preprocessing.json` beside the model says how to turn an image into the model's input and its output into a
decision, so a non-Python runtime can reproduce the RUN.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from meddx import __version__
from meddx.app.common import Log, logger_or
from meddx.errors import ConfigError, MeddxError
from meddx.infer.runtimes import FORMATS, META_FILE, MODEL_FILES, MODELS, default_export_dir
from meddx.utils import atomic_write_json

# Largest accepted |exported - Keras| on the model's raw outputs (logits). Measured on every registry classifier
# (tests/app/test_export.py): SavedModel 0 to 1.2e-5 (app_resnet50: the serving graph fuses differently), ONNX /
# OpenVINO f32 / LiteRT <= ~2e-5 (other kernels, other summation order); OpenVINO bf16 ~1e-2, hence f32.
DEFAULT_TOLERANCE = {"savedmodel": 1e-4, "onnx": 1e-4, "openvino": 1e-4, "litert": 1e-4}
PARITY_CASES = 64  # validation images compared (the first ones of the RUN's validation split)
SYNTHETIC_CASES = 8
ONNX_OPSET = 17
KERAS_KINDS = ("classifier", "segmenter", "sequence_classifier")

INTENSITY_FORMULAS = {
    "MinMax": "lo, hi = percentiles of the image; (x - lo) / (hi - lo), clipped to [0, 1] when clip; 0 when hi == lo",
    "ZScore": "(x - mean) / (std + eps) over all voxels (nonzero: over x != 0; foreground: over x > Otsu threshold; "
              "channel_wise: per channel)",
    "ScaleIntensity": "x * scale + offset",
    "Window": "(x - (center - width / 2)) / width, clipped to [0, 1] when clip",
}


def export_run(run: str | Path, fmt: str, out: str | Path | None = None, tolerance: float | None = None,
               log: Log | None = None) -> Path:
    """Export RUN's model as `fmt` into `out` (default RUN/export/<fmt>) with preprocessing.json, after checking it
    against Keras; a difference above `tolerance` is refused (MeddxError) and nothing is left at `out`."""
    from meddx.infer.base import load_keras_parts, read_run_info

    log = logger_or(log)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if tolerance is not None and not tolerance >= 0:
        raise ConfigError(f"--tolerance must be >= 0, got {tolerance}")
    tol = DEFAULT_TOLERANCE[fmt] if tolerance is None else float(tolerance)
    info, path = read_run_info(run)
    if info.kind not in KERAS_KINDS:
        raise ConfigError(f"a {info.kind} RUN has no Keras model to export", path)
    target = Path(out) if out is not None else default_export_dir(path, fmt)
    _check_target(target)
    model, prep = load_keras_parts(info, path)
    x, checked_on = parity_inputs(info, path, prep, model)
    exported_model, emb_dim = _with_features(model, info, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        try:
            names = write_model(exported_model, fmt, tmp)
            meta = describe_export(info, prep, model, fmt, names)
            if emb_dim:  # the OOD gate's embedding as a second output (see meddx.infer.runtimes)
                meta.update(embedding_dim=emb_dim, outputs=["logits", "embedding"])
            exported = MODELS[fmt](tmp, meta)
        except Exception as exc:  # converters fail in their own ways (unsupported ops, invalid graphs)
            raise MeddxError(f"cannot export {info.model} as {fmt}: {type(exc).__name__}: {str(exc)[:300]}; "
                             f"try another --format; nothing written at {target}", path) from None
        diff = max_abs_diff(exported.predict(x, batch_size=32), model.predict(x, batch_size=32, verbose=0))
        del exported
        if not diff <= tol:
            raise MeddxError(f"the {fmt} export differs from Keras by {diff:.3g} > tolerance {tol:.3g} on {checked_on}; "
                             f"nothing written at {target}", path)
        log(f"parity on {checked_on}: max |{fmt} - Keras| = {diff:.3g} (tolerance {tol:.3g})")
        meta["parity"] = {"max_abs_diff": diff, "tolerance": tol, "checked_on": checked_on, "n": int(len(x)),
                          "compared": "raw model outputs (logits)"}
        atomic_write_json(tmp / META_FILE, meta)
        os.chmod(tmp, 0o755)  # mkdtemp made it private
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{fmt} export of {info.model} written to {target} (+ {META_FILE})")
    return target


def _with_features(model: Any, info: Any, path: Path) -> tuple[Any, int]:
    """(the model to export, embedding width): a fingerprinted classifier RUN exports [logits, embedding] so the
    exported runtime can run the out-of-distribution gate; other RUNs export the model as it is (width 0)."""
    from meddx.train.fingerprint import OOD_FILE, export_feature_model

    if info.kind != "classifier" or not (path / OOD_FILE).is_file():
        return model, 0
    feature_model = export_feature_model(model)
    return feature_model, int(feature_model.outputs[1].shape[-1])


def _check_target(target: Path) -> None:
    """`--out` must be a new folder or an earlier export (replaced); never a file or someone else's folder."""
    if target.is_file():
        raise ConfigError("is a file; --out names the folder to export into", target)
    if target.is_dir() and any(target.iterdir()) and not (target / META_FILE).is_file():
        raise ConfigError(f"exists and is not a meddx export folder (no {META_FILE}); choose another --out", target)


def _replace(tmp: Path, target: Path) -> None:
    """Rename the finished export onto `target` (an earlier export there is moved aside first, then removed)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| (inf when the shapes differ or a value is not finite)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    d = np.abs(a - b)
    return float(d.max()) if d.size and np.isfinite(d).all() else (0.0 if not d.size else float("inf"))


# -- writing each format ------------------------------------------------------------------------------------

def input_signature_shape(model: Any) -> tuple[Any, ...]:
    """The model's single input shape with a free batch axis."""
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ConfigError(f"models with {len(shape)} inputs cannot be exported")
        shape = shape[0]
    return (None, *shape[1:])


def write_model(model: Any, fmt: str, folder: Path, saved_model: Path | None = None) -> dict[str, str]:
    """Write `model` as `fmt` into `folder` (which exists); returns the input/output tensor names. OpenVINO and
    LiteRT convert from a SavedModel: `saved_model` (one already exported from `model`), else a temporary one."""
    import tensorflow as tf

    shape = input_signature_shape(model)
    if fmt == "onnx":
        import tf2onnx

        spec = (tf.TensorSpec(shape, tf.float32, name="input"),)
        fn = tf.function(lambda x: model(x, training=False))
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=ONNX_OPSET)
        _freeze_captured_constants(proto, fn.get_concrete_function(*spec))
        (folder / MODEL_FILES["onnx"]).write_bytes(proto.SerializeToString())
        return {"input_name": proto.graph.input[0].name, "output_name": proto.graph.output[0].name}
    sig = [tf.TensorSpec(shape, tf.float32, name="input")]
    saved = folder if fmt == "savedmodel" else (saved_model or folder / "_savedmodel")
    if saved_model is None or fmt == "savedmodel":
        model.export(str(saved), format="tf_saved_model", verbose=False, input_signature=sig)
    if fmt == "savedmodel":
        return {"input_name": "input", "output_name": "output_0", "signature": "serve"}
    try:
        if fmt == "openvino":
            import openvino as ov

            ov_model = ov.convert_model(str(saved))
            ov.save_model(ov_model, str(folder / MODEL_FILES["openvino"]), compress_to_fp16=False)  # f32 weights
            return {"input_name": ov_model.inputs[0].get_any_name(), "output_name": ov_model.outputs[0].get_any_name()}
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        (folder / MODEL_FILES["litert"]).write_bytes(converter.convert())
        return {"input_name": "input", "output_name": "output_0"}
    finally:
        if saved_model is None:
            shutil.rmtree(saved, ignore_errors=True)


def _freeze_captured_constants(proto: Any, concrete: Any) -> None:
    """Turn graph inputs that tf2onnx left for tensors the function captured (e.g. a Keras Normalization layer's
    mean and variance, which are constants, not variables) into initializers holding their values."""
    import onnx.numpy_helper

    values = {}
    for outer, inner in zip(concrete.captured_inputs, concrete.graph.internal_captures):
        if getattr(outer, "dtype", None) is not None and outer.dtype.name != "resource":
            values[inner.name] = np.asarray(outer)
    extra = [i for i in proto.graph.input[1:] if i.name in values]
    for inp in extra:
        proto.graph.initializer.append(onnx.numpy_helper.from_array(values[inp.name], inp.name))
        proto.graph.input.remove(inp)


# -- the inputs the parity check runs on ------------------------------------------------------------------

def parity_inputs(info: Any, path: Path, prep: Any, model: Any) -> tuple[np.ndarray, str]:
    """(inputs, what they are): up to PARITY_CASES of the RUN's validation images when its data and splits.csv are
    reachable (image classifiers), else SYNTHETIC_CASES deterministic uniform [0, 1) inputs of the model's shape."""
    if info.kind == "classifier":
        try:
            x = validation_images(info, path, prep)
        except (MeddxError, OSError, ValueError, KeyError) as exc:
            logger_or(None)(f"the RUN's validation images are not usable for the parity check ({exc}); "
                            "using synthetic inputs")
            x = None
        if x is not None and len(x):
            return x, f"{len(x)} validation images of the RUN"
    shape = [s if s is not None else d for s, d in zip(input_signature_shape(model)[1:], info.input_shape)]
    x = np.random.default_rng(0).random((SYNTHETIC_CASES, *shape), dtype=np.float32)
    return x, f"{SYNTHETIC_CASES} deterministic synthetic inputs (the RUN's data are not reachable)"


def validation_images(info: Any, path: Path, prep: Any, n: int = PARITY_CASES) -> np.ndarray | None:
    """The first `n` validation cases of the RUN (splits.csv), preprocessed as the RUN does; None when the data or
    splits.csv are missing."""
    source = info.source
    if not source or not Path(source).exists() or not (path / "splits.csv").is_file():
        return None
    from meddx.data.datasets import load_dataset
    from meddx.transforms.prepare import materialise

    with (path / "splits.csv").open(newline="", encoding="utf-8") as fh:
        split_of = {row["item"]: row["split"] for row in csv.DictReader(fh)}
    ds = load_dataset(source)
    idx = [i for i, name in enumerate(ds.item_names()) if split_of.get(name) == "val"][:n]
    if not idx:
        return None
    return materialise(ds.subset(idx), prep, use_cache=False, progress=False)


# -- preprocessing.json ---------------------------------------------------------------------------------------

def describe_export(info: Any, prep: Any, model: Any, fmt: str, names: dict[str, str]) -> dict[str, Any]:
    """preprocessing.json: model file and tensors, the input pipeline step by step, and how outputs become a
    decision (class names, activation, threshold)."""
    units = int(model.output_shape[-1])
    activation = "softmax" if info.task == "multiclass" else "sigmoid"
    if info.task == "binary":
        decision = (f"p = sigmoid(logit); predict {info.positive_class!r} when p >= threshold "
                    f"({info.threshold if info.threshold is not None else 0.5}), else the other class")
    elif info.task == "multiclass":
        decision = "argmax of softmax(logits)"
    else:
        decision = "each class present when sigmoid(logit) >= 0.5"
    meta: dict[str, Any] = {
        "format": fmt, "model_file": MODEL_FILES[fmt], **names,
        "input_shape": list(input_signature_shape(model)), "output_shape": [None, *model.output_shape[1:]],
        "dtype": "float32", "layout": "NHWC" if prep.spatial_ndim == 2 else "NDHWC",
        "kind": info.kind, "task": info.task, "class_names": list(info.class_names),
        "positive_class": info.positive_class, "threshold": info.threshold,
        "output": {"values": "logits", "units": units, "activation": activation, "decision": decision},
        "spatial_ndim": prep.spatial_ndim, "channels": prep.channels,
        "steps": preprocessing_steps(prep),
        "meddx_preprocessing": prep.get_config(),
        "run": {"model": info.model, "created": info.created, "meddx_version": info.meddx_version},
        "exported_by": f"meddx {__version__}",
    }
    if fmt == "openvino":
        meta["runtime_hints"] = {"INFERENCE_PRECISION_HINT": "f32",
                                 "why": "OpenVINO's CPU default on AMX/AVX512-BF16 CPUs is bf16: faster, but outputs "
                                        "differ from Keras by ~1e-2; set f32 to reproduce the RUN's numbers"}
    return meta


def preprocessing_steps(prep: Any) -> list[dict[str, Any]]:
    """The RUN's Preprocessing as an ordered list of plain steps a non-Python runtime can implement."""
    steps: list[dict[str, Any]] = [{
        "step": "read", "note": "the image as float32, spatial axes then a channel axis (grey: one channel); "
                                "a 2D model given a volume scores each slice"}]
    if prep.select_channels is not None:
        steps.append({"step": "select_channels", "channels": list(prep.select_channels)})
    if prep.crop is not None:
        steps.append({"step": "crop", "kind": prep.crop,
                      "note": "bounding box of voxels above the image's Otsu threshold"})
    if prep.spacing is not None:
        steps.append({"step": "resample", "spacing_mm": list(prep.spacing), "order": prep.order,
                      "note": "only for images whose spacing is known (not plain PNG/JPEG)"})
    transform = getattr(prep, "_intensity", None)
    intensity: dict[str, Any] = {"step": "intensity", "spec": prep.intensity}
    if transform is not None:
        name = type(transform).__name__
        params = {k: v for k, v in transform.get_config().items() if k != "class"}
        intensity.update(transform=name, params=params, formula=INTENSITY_FORMULAS.get(name, ""))
    steps.append(intensity)
    steps.append({"step": "resize", "size": list(prep.image_size), "fit": prep.fit,
                  "interpolation": {0: "nearest", 1: "linear", 3: "cubic"}.get(prep.order, f"order {prep.order}"),
                  "anti_alias": prep.order > 0,
                  "note": "stretch: to size; pad/crop: aspect kept, centre padded with the minimum / cropped"})
    steps.append({"step": "channels", "channels": prep.channels,
                  "rule": "grey repeated to N channels; RGB(A) to grey by 0.299 R + 0.587 G + 0.114 B"})
    return steps

