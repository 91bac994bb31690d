"""Exported models (`meddx export`: SavedModel, ONNX, OpenVINO, LiteRT) run outside Keras, behind the one method
the predictors call (`predict(x, batch_size)`), so a RUN's classifier gives the same `Prediction`s from them.

An export folder holds the model file(s) and `preprocessing.json` (what a non-Python runtime needs to reproduce the
RUN's input pipeline). `meddx predict --runtime onnx|openvino` looks for it in RUN/export/<format>/ (the default
`meddx export --out`). Heatmaps need the Keras model (Grad-CAM gradients), so exported runtimes give none.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.utils import read_json

LOGGER = logging.getLogger(__name__)
EXPORT_DIR = "export"  # RUN/export/<format>/ is where `meddx export` writes by default and `--runtime` looks
META_FILE = "preprocessing.json"
FORMATS = ("savedmodel", "onnx", "openvino", "litert")
MODEL_FILES = {"savedmodel": "saved_model.pb", "onnx": "model.onnx", "openvino": "model.xml",
               "litert": "model.tflite"}
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")


def default_export_dir(run_dir: str | Path, fmt: str) -> Path:
    """RUN/export/<fmt>: where `meddx export` writes unless told otherwise and `--runtime <fmt>` looks."""
    return Path(run_dir) / EXPORT_DIR / fmt


class ExportedModel:
    """An exported model behind a Keras-like `predict(x, batch_size)` (float32 in, raw outputs out)."""

    fmt = ""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta
        self.output_shape = tuple(meta.get("output_shape") or (None, 1))

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - every format overrides it
        raise NotImplementedError

    def run(self, x: np.ndarray) -> np.ndarray:
        """The logits of one batch."""
        return self._pick(self.run_all(x))[0]

    @property
    def has_features(self) -> bool:
        """Whether the export also outputs the OOD embedding (`meddx export` of a fingerprinted RUN)."""
        return bool(self.meta.get("embedding_dim"))

    def _pick(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, embedding or None) among a call's outputs, told apart by width (runtimes may reorder them)."""
        outs = [np.asarray(o, np.float32) for o in outputs]
        if not self.has_features or len(outs) < 2:
            return outs[0], None
        width = int(self.meta["embedding_dim"])
        emb = [o for o in outs if o.shape[-1] == width]
        logit = [o for o in outs if o.shape[-1] != width]
        if len(emb) == 1 and len(logit) == 1:
            return logit[0], emb[0]
        return outs[0], outs[1]  # same widths: the written order (logits, embedding)

    def predict(self, x: np.ndarray, batch_size: int = 128, verbose: int = 0) -> np.ndarray:
        """Logits for `x` (N, *input_shape), `batch_size` rows per call."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, *self.output_shape[1:]), np.float32)
        return np.concatenate([self.run(x[i: i + batch_size]) for i in range(0, len(x), batch_size)])

    def features(self, x: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (N, D) float64, logits) in one pass, as `meddx.train.fingerprint.feature_function` gives."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        embs, logits = [], []
        for i in range(0, len(x), batch_size):
            lo, em = self._pick(self.run_all(x[i: i + batch_size]))
            logits.append(lo)
            embs.append(em)
        if not logits:
            return np.zeros((0, int(self.meta.get("embedding_dim") or 0))), np.zeros((0, *self.output_shape[1:]))
        return np.concatenate(embs).astype(np.float64), np.concatenate(logits)

    __call__ = predict


class OnnxModel(ExportedModel):
    """ONNX Runtime (CPU execution provider)."""

    fmt = "onnx"

    def __init__(self, folder: Path, meta: dict[str, Any], threads: int | None = None) -> None:
        super().__init__(folder, meta)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(folder / MODEL_FILES["onnx"]), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class OpenVinoModel(ExportedModel):
    """OpenVINO on the CPU with an explicit inference precision: f32 (default: Keras's numbers) or bf16 (faster on
    AMX/AVX512-BF16 CPUs, where OpenVINO's own default is bf16, at ~1e-2 output differences)."""

    fmt = "openvino"

    def __init__(self, folder: Path, meta: dict[str, Any], precision: str = "f32",
                 threads: int | None = None) -> None:
        super().__init__(folder, meta)
        if precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(folder / MODEL_FILES["openvino"]), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        res = self.request.infer([x])
        return [np.array(res[o]) for o in self.compiled.outputs]  # copies: the request's buffers are reused


class SavedModelModel(ExportedModel):
    """A TensorFlow SavedModel's `serve` signature (Keras `model.export`)."""

    fmt = "savedmodel"

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        super().__init__(folder, meta)
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(folder))
        self.fn = self.loaded.serve

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.fn(x)
        if isinstance(out, dict):
            return [np.asarray(out[k]) for k in sorted(out)]
        return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


class LiteRTModel(ExportedModel):
    """A LiteRT (TFLite) flatbuffer, run by ai_edge_litert when installed, else TensorFlow's own interpreter."""

    fmt = "litert"

    def __init__(self, folder: Path, meta: dict[str, Any], threads: int | None = None) -> None:
        super().__init__(folder, meta)
        path = str(folder / MODEL_FILES["litert"])
        import warnings

        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        with warnings.catch_warnings():  # TF's own interpreter warns that it is deprecated on every construction
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count() or 1)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.batch = -1

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(x.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).copy() for i in self.outputs]


MODELS: dict[str, type[ExportedModel]] = {"onnx": OnnxModel, "openvino": OpenVinoModel,
                                          "savedmodel": SavedModelModel, "litert": LiteRTModel}


def read_export_meta(folder: str | Path) -> dict[str, Any]:
    """preprocessing.json of an export folder, with one-line errors when the folder is not a finished export."""
    p = Path(folder)
    if not (p / META_FILE).is_file():
        raise InputError(f"not a meddx export folder ({META_FILE} is missing); run `meddx export` first", p)
    try:
        meta = read_json(p / META_FILE)
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable {META_FILE}: {exc}", p) from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt not in MODELS:
        raise InputError(f"{META_FILE} names no known export format (got {fmt!r})", p)
    if not (p / MODEL_FILES[fmt]).is_file():
        raise InputError(f"export folder lacks {MODEL_FILES[fmt]}", p)
    return meta


def open_exported(folder: str | Path, fmt: str | None = None, **options: Any) -> ExportedModel:
    """The exported model in `folder` (format from its preprocessing.json; `fmt`, when given, must match);
    `options` go to the format's class (`precision` for OpenVINO, `threads`)."""
    p = Path(folder)
    meta = read_export_meta(p)
    if fmt is not None and meta["format"] != fmt:
        raise InputError(f"holds a {meta['format']} export, not {fmt}", p)
    try:
        return MODELS[meta["format"]](p, meta, **options)
    except ImportError as exc:
        raise ConfigError(f"the {meta['format']} runtime is not installed ({exc.name}); "
                          "pip install 'meddx[export]'") from None


def check_matches_run(meta: dict[str, Any], info: Any, folder: Path) -> None:
    """Refuse an export made from another (or an older) training of the RUN: its numbers would not be the RUN's."""
    made_from = meta.get("run") or {}
    if made_from.get("created") != info.created or made_from.get("model") != info.model:
        raise InputError(f"was exported from another training of this RUN (RUN created {info.created}, export's "
                         f"{made_from.get('created')}); run `meddx export` again", folder)


def load_runtime(run_dir: str | Path, runtime: str, export: str | Path | None = None, **options: Any) -> Any:
    """The RUN's `Classifier` predicting through its exported model (`runtime` onnx | openvino | savedmodel | litert,
    from `export` or RUN/export/<runtime>/), with the RUN's own preprocessing, class names and threshold; no
    heatmaps (they need the Keras model's gradients)."""
    from meddx.infer.base import read_run_info
    from meddx.infer.classifier import Classifier
    from meddx.transforms.preprocess import Preprocessing

    if runtime not in MODELS:
        raise ConfigError(f"unknown runtime {runtime!r}; choose keras or one of {', '.join(MODELS)}")
    if options.pop("heatmaps", False):
        raise ConfigError(f"heatmaps need the Keras model (Grad-CAM gradients); --runtime {runtime} gives "
                          "probabilities only: drop --heatmaps or use --runtime keras")
    info, path = read_run_info(run_dir)
    if info.kind != "classifier":
        raise ConfigError(f"--runtime {runtime} serves image classifier RUNs; this is a {info.kind} RUN "
                          "(use --runtime keras)", path)
    folder = Path(export) if export is not None else default_export_dir(path, runtime)
    if not folder.is_dir():
        raise InputError(f"no {runtime} export at {folder}; run `meddx export {path} --format {runtime}` first",
                         path)
    model_options = {k: options.pop(k) for k in ("precision", "threads") if k in options}
    model = open_exported(folder, runtime, **model_options)
    check_matches_run(model.meta, info, folder)
    try:
        prep = Preprocessing.from_config(info.preprocessing)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"run.json has unusable preprocessing: {exc}", path) from None
    LOGGER.debug("predicting with the %s export in %s", runtime, folder)
    return Classifier(info, model, prep, path, heatmaps=False, **options)
