"""What a RUN was trained on, so inference can tell when an input is outside it; and the RUN's calibration.

Two parts, both fitted after training and stored with the RUN:

* the fingerprint (run.json `fingerprint`): the training data's modality, dimensionality, channels, size,
  spacing and intensity ranges (from up to `MAX_META_ITEMS` training cases), and a feature-space model in
  `ood.npz` (numpy arrays only): a class-conditional Gaussian with one shared Ledoit-Wolf covariance on the
  penultimate-layer embedding (Lee et al. 2018, "Mahalanobis"), plus a single Gaussian on a 4x4 thumbnail of the
  preprocessed input (catches inputs whose embedding happens to fall near a class: blank, inverted, other
  anatomy). Each view's squared distance is divided by its validation 95th percentile, the largest ratio is the
  raw score, and the threshold is the conformal (1 - `FALSE_FLAG`) quantile of the validation scores (a log-normal
  fit's quantile below `SMALL_VAL` cases, see `ood_threshold`), so on average about `FALSE_FLAG` (4 %) of new
  in-distribution cases are flagged (<= 5 % with the sampling noise);
* the calibration (run.json `calibration`): the temperature fitted on validation logits, ECE before/after, and the
  validation cases' calibrated probabilities and labels (in `ood.npz`) from which split-conformal sets are
  calibrated at any coverage asked at prediction time.

`add_fingerprint(RUN, DATA)` fits both for an existing RUN (its weights and predictions are untouched).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meddx.errors import InputError

LOGGER = logging.getLogger(__name__)
OOD_FILE = "ood.npz"
FINGERPRINT_KEY = "fingerprint"
CALIBRATION_KEY = "calibration"
VERSION = 1
FALSE_FLAG = 0.04  # target share of validation cases flagged: 1 point under the promised 5 %, for the calibration
# split's sampling noise (262 PneumoniaMNIST validation cases at 0.05 flagged 6.1 % of 862 held-out ones)
MAX_META_ITEMS = 300  # training cases read for the metadata fingerprint
MAX_FIT_CASES = 6000  # training cases embedded for the feature model
THUMB = 4  # thumbnail side of the input-space view


# -- metadata ------------------------------------------------------------------------------------------------
def _robust_range(a: np.ndarray) -> tuple[float, float]:
    v = np.asarray(a, dtype=np.float64).ravel()
    if v.size > 200_000:
        v = v[:: v.size // 200_000 + 1]
    lo, hi = np.percentile(v, [0.5, 99.5])
    return float(lo), float(hi)


def describe_item(image: Any, spatial_ndim: int | None = None) -> dict[str, Any]:
    """Modality, dimensionality, channels, spatial shape, spacing (when known) and robust intensity range of one
    training case or input (`meddx.io.Image` or a raw array with its `spatial_ndim`)."""
    if isinstance(image, np.ndarray):
        n = spatial_ndim or 2
        return {"modality": "OT", "spatial_ndim": n, "sequence": False,
                "channels": int(image.shape[-1]) if image.ndim > n else 1,
                "shape": [int(s) for s in image.shape[:n]], "spacing": None, "range": _robust_range(image)}
    return {"modality": str(image.modality or "OT"), "spatial_ndim": int(image.spatial_ndim),
            "sequence": bool(image.is_sequence), "channels": int(image.n_channels),
            "shape": [int(s) for s in image.spatial_shape],
            "spacing": [float(s) for s in image.spacing] if image.has_geometry else None,
            "range": _robust_range(image.array)}


def metadata_fingerprint(items: Sequence[Any], spatial_ndim: int | None = None) -> dict[str, Any]:
    """The envelope of the cases `items` (arrays or file paths): modalities, dimensionality, channels, per-axis size
    and spacing ranges, and the intensity envelope (lowest 0.5th and highest 99.5th percentile)."""
    from meddx.io import read_image

    descs = []
    for it in items:
        descs.append(describe_item(it if isinstance(it, np.ndarray) else read_image(it), spatial_ndim))
    if not descs:
        raise InputError("no training cases to fingerprint")
    shapes = np.array([d["shape"] for d in descs if len(d["shape"]) == len(descs[0]["shape"])])
    spacings = [d["spacing"] for d in descs if d["spacing"] is not None and len(d["spacing"]) == len(descs[0]["shape"])]
    lows = [d["range"][0] for d in descs]
    highs = [d["range"][1] for d in descs]
    return {
        "n_cases_read": len(descs),
        "modalities": sorted({d["modality"] for d in descs}),
        "spatial_ndim": sorted({d["spatial_ndim"] for d in descs}),
        "sequence": any(d["sequence"] for d in descs),
        "channels": sorted({d["channels"] for d in descs}),
        "size_min": shapes.min(axis=0).tolist(), "size_max": shapes.max(axis=0).tolist(),
        "spacing_min": np.min(spacings, axis=0).tolist() if spacings else None,
        "spacing_max": np.max(spacings, axis=0).tolist() if spacings else None,
        "intensity": {"low": float(min(lows)), "high": float(max(highs)),
                      "low_median": float(np.median(lows)), "high_median": float(np.median(highs))},
    }


# -- features ------------------------------------------------------------------------------------------------
def feature_function(model: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """x -> (embedding (N, D), logits) in one model call: the penultimate vector (input of the 'logits' layer)
    joined with the spatial mean of the 'features' map when the model has one at its top level."""
    import keras

    from meddx.models.registry import CAM_LAYER, OUTPUT_LAYER

    try:
        outputs = [model.get_layer(OUTPUT_LAYER).input]
    except (ValueError, AttributeError):
        raise InputError(f"model '{model.name}' has no '{OUTPUT_LAYER}' layer to read features from") from None
    try:
        fmap = model.get_layer(CAM_LAYER).output
        if len(fmap.shape) in (4, 5):
            outputs.append(fmap)
    except (ValueError, AttributeError):
        pass
    logits = model.outputs[0]
    fm = keras.Model(model.inputs, [*outputs, logits])

    def run(x: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        if len(x) == 0:
            return np.zeros((0, 0), np.float32), np.zeros((0, int(logits.shape[-1])), np.float32)
        parts = [[] for _ in range(len(outputs) + 1)]
        for s in range(0, len(x), batch_size):  # feature maps of a whole split would not fit in memory
            got = fm.predict_on_batch(x[s: s + batch_size])  # no tf.data pipeline per call
            for i, g in enumerate(got):
                g = np.asarray(g)
                parts[i].append(g.reshape(len(g), -1) if g.ndim == 2 else g.mean(axis=tuple(range(1, g.ndim - 1))))
        arrays = [np.concatenate(p) for p in parts]
        return np.concatenate(arrays[:-1], axis=1).astype(np.float64), arrays[-1]

    return run


def export_feature_model(model: Any) -> Any:
    """A Keras model with outputs [logits, embedding]: `feature_function`'s embedding computed in the graph
    (penultimate vector joined with the spatial mean of the 'features' map), so an exported runtime (ONNX,
    OpenVINO ...) can feed the OOD gate as the Keras model does."""
    import keras

    from meddx.models.registry import CAM_LAYER, OUTPUT_LAYER

    try:
        parts = [keras.layers.Flatten()(model.get_layer(OUTPUT_LAYER).input)]
    except (ValueError, AttributeError):
        raise InputError(f"model '{model.name}' has no '{OUTPUT_LAYER}' layer to read features from") from None
    try:
        fmap = model.get_layer(CAM_LAYER).output
        if len(fmap.shape) == 4:
            parts.append(keras.layers.GlobalAveragePooling2D()(fmap))
        elif len(fmap.shape) == 5:
            parts.append(keras.layers.GlobalAveragePooling3D()(fmap))
    except (ValueError, AttributeError):
        pass
    emb = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    return keras.Model(model.inputs, [model.outputs[0], emb], name=f"{model.name}_with_features")


def thumbnail(x: np.ndarray, side: int = THUMB) -> np.ndarray:
    """(N, side^d * C + 2) input-space descriptor of preprocessed inputs: block means on a side^d grid per channel,
    plus each input's mean and standard deviation."""
    x = np.asarray(x, dtype=np.float64)
    n, spatial = len(x), x.shape[1:-1]
    idx = [np.linspace(0, s, side + 1).astype(int) for s in spatial]
    blocks = []
    if len(spatial) == 2:
        for i in range(side):
            for j in range(side):
                b = x[:, idx[0][i]:max(idx[0][i + 1], idx[0][i] + 1), idx[1][j]:max(idx[1][j + 1], idx[1][j] + 1)]
                blocks.append(b.mean(axis=(1, 2)))
    else:
        for i in range(side):
            for j in range(side):
                for k in range(side):
                    b = x[:, idx[0][i]:max(idx[0][i + 1], idx[0][i] + 1), idx[1][j]:max(idx[1][j + 1], idx[1][j] + 1),
                          idx[2][k]:max(idx[2][k + 1], idx[2][k] + 1)]
                    blocks.append(b.mean(axis=(1, 2, 3)))
    flat = x.reshape(n, -1)
    return np.concatenate([np.stack(blocks, axis=1).reshape(n, -1),
                           flat.mean(axis=1, keepdims=True), flat.std(axis=1, keepdims=True)], axis=1)


def _fit_gaussian(f: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, D), shared precision (D, D)) by Ledoit-Wolf on class-centred features."""
    from sklearn.covariance import LedoitWolf

    if labels is None:
        labels = np.zeros(len(f), dtype=int)
    classes = np.unique(labels)
    means = np.stack([f[labels == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, labels)]
    lw = LedoitWolf().fit(centred)
    return means, lw.precision_


def mahalanobis(f: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Smallest squared Mahalanobis distance of each row of `f` to the class means (shared precision)."""
    d = f[:, None, :] - means[None]
    return np.einsum("ncd,de,nce->nc", d, precision, d).min(axis=1)


def conformal_upper(scores: np.ndarray, rate: float) -> float:
    """The ceil((n + 1)(1 - rate))-th smallest score: at most `rate` of exchangeable new cases exceed it."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = min(len(s), math.ceil((len(s) + 1) * (1 - rate)))
    return float(s[max(k, 1) - 1])


SMALL_VAL = 100  # fewer validation cases than this: the threshold from a log-normal fit, not an order statistic


def ood_threshold(scores: np.ndarray, rate: float) -> float:
    """The score above which a case is flagged: the conformal (1 - rate) quantile of the validation scores; with
    fewer than `SMALL_VAL` of them that order statistic is the largest case or two (39 BreastMNIST validation
    cases: the maximum, which let 91-96 % of MedNIST AbdomenCT / ChestCT through at AUROC 0.97), so a log-normal
    fit of the scores gives the (1 - rate) quantile instead."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) >= SMALL_VAL:
        return conformal_upper(s, rate)
    from scipy.stats import norm

    logs = np.log(np.maximum(s, 1e-12))
    return float(np.exp(logs.mean() + norm.ppf(1 - rate) * logs.std(ddof=1)))


class FeatureModel:
    """The two views (embedding, thumbnail) with their scales and the calibrated threshold; arrays only."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = arrays

    @classmethod
    def fit(cls, emb_tr: np.ndarray, y_tr: np.ndarray | None, thumb_tr: np.ndarray, emb_va: np.ndarray,
            thumb_va: np.ndarray, rate: float = FALSE_FLAG) -> "FeatureModel":
        means, prec = _fit_gaussian(emb_tr, y_tr)
        t_means, t_prec = _fit_gaussian(thumb_tr, None)
        a = {"emb_means": means, "emb_precision": prec, "thumb_means": t_means, "thumb_precision": t_prec}
        model = cls(a)
        d_emb, d_thumb = model.distances(emb_va, thumb_va)
        a["emb_scale"] = np.array(max(float(np.percentile(d_emb, 95)), 1e-9))
        a["thumb_scale"] = np.array(max(float(np.percentile(d_thumb, 95)), 1e-9))
        raw = model.raw_score(emb_va, thumb_va)
        a["threshold"] = np.array(ood_threshold(raw, rate))
        a["val_scores"] = raw / float(a["threshold"])
        return model

    def distances(self, emb: np.ndarray, thumb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.a
        return (mahalanobis(emb, a["emb_means"], a["emb_precision"]),
                mahalanobis(thumb, a["thumb_means"], a["thumb_precision"]))

    def raw_score(self, emb: np.ndarray, thumb: np.ndarray) -> np.ndarray:
        d_emb, d_thumb = self.distances(emb, thumb)
        return np.maximum(d_emb / float(self.a["emb_scale"]), d_thumb / float(self.a["thumb_scale"]))

    def score(self, emb: np.ndarray, thumb: np.ndarray) -> np.ndarray:
        """OOD score per row: > 1 is outside what validation cases reached (~5 % of them do)."""
        return self.raw_score(emb, thumb) / float(self.a["threshold"])


# -- fitting and writing -------------------------------------------------------------------------------------
def _spread(idx: np.ndarray, n: int) -> np.ndarray:
    return idx if len(idx) <= n else idx[np.linspace(0, len(idx) - 1, n).astype(int)]


def fit_fingerprint(model: Any, ds: Any, tr: np.ndarray, va: np.ndarray, x_tr: np.ndarray, x_va: np.ndarray,
                    task: str, coverage: float = 0.9) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(fingerprint section, calibration section, ood.npz arrays) from training / validation cases (`x_*`: the
    preprocessed arrays of `ds` cases `tr` / `va`)."""
    from meddx.evaluate.classification import expected_calibration_error
    from meddx.evaluate.conformal import conformal_quantile, fit_temperature, prediction_sets, scaled_probs, \
        set_metrics

    meta = metadata_fingerprint([ds.items[i] for i in _spread(tr, MAX_META_ITEMS)], ds.spatial_ndim)
    feats = feature_function(model)
    pick = _spread(np.arange(len(tr)), MAX_FIT_CASES)
    emb_tr, _ = feats(x_tr[pick])
    emb_va, logits_va = feats(x_va)
    y_tr = ds.labels[tr][pick]
    single = task != "multilabel"
    fm = FeatureModel.fit(emb_tr, y_tr.reshape(-1).astype(int) if single else None, thumbnail(x_tr[pick]),
                          emb_va, thumbnail(x_va))
    y_va = ds.labels[va]
    arrays = dict(fm.a)
    temperature = fit_temperature(logits_va, y_va if single else y_va, task)
    before = scaled_probs(logits_va, 1.0, task)
    after = scaled_probs(logits_va, temperature, task)
    calibration: dict[str, Any] = {
        "version": VERSION, "file": OOD_FILE, "temperature": round(temperature, 6),
        "ece_before": float(expected_calibration_error(y_va, before, task=task)),
        "ece_after": float(expected_calibration_error(y_va, after, task=task)), "n_val": int(len(va))}
    if single:
        yv = y_va.reshape(-1).astype(int)
        arrays["cal_probs"] = after
        arrays["cal_labels"] = yv
        q = conformal_quantile(after, yv, coverage, "lac")
        calibration["conformal"] = {"method": "lac", "target": coverage, "qhat": q,
                                    **set_metrics(prediction_sets(after, q, "lac"), yv)}
    section = {"version": VERSION, "file": OOD_FILE, "metadata": meta, "feature_dim": int(emb_tr.shape[1]),
               "views": ["penultimate embedding (class-conditional Mahalanobis, Ledoit-Wolf)",
                         f"{THUMB}x{THUMB} input thumbnail (Mahalanobis)"],
               "false_flag_target": FALSE_FLAG, "n_fit": int(len(pick)), "n_val": int(len(va)),
               "val_flag_rate": float((fm.a["val_scores"] > 1.0).mean())}
    return section, calibration, arrays


def write_fingerprint(run_dir: str | Path, info: dict[str, Any], section: dict[str, Any],
                      calibration: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """ood.npz (atomically) and the two sections in `info` (the caller writes run.json)."""
    from meddx.utils import atomic_path

    with atomic_path(Path(run_dir) / OOD_FILE, suffix=".npz") as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    info[FINGERPRINT_KEY] = section
    info[CALIBRATION_KEY] = calibration


def fingerprint_into(info: dict[str, Any], run_dir: str | Path, model: Any, ds: Any, tr: np.ndarray,
                     va: np.ndarray, x_tr: np.ndarray, x_va: np.ndarray,
                     log: Callable[[str], None] | None = None) -> None:
    """After training: fit the fingerprint and calibration, write ood.npz and add both sections to `info` (the
    run.json about to be written). A failure here is logged and leaves the RUN without a gate, never loses it."""
    log = log or LOGGER.info
    try:
        section, calibration, arrays = fit_fingerprint(model, ds, tr, va, x_tr, x_va, info["task"])
        write_fingerprint(run_dir, info, section, calibration, arrays)
    except (ValueError, OSError, np.linalg.LinAlgError) as exc:
        log(f"warning: no out-of-distribution fingerprint for this RUN: {exc}")
        return
    conf = calibration.get("conformal") or {}
    log(f"fingerprint: {100 * section['val_flag_rate']:.1f} % of validation cases flagged out of distribution; "
        f"temperature {calibration['temperature']:.3f} (ECE {calibration['ece_before']:.3f} -> "
        f"{calibration['ece_after']:.3f})" + (f"; 90 % conformal sets: mean size {conf['mean_set_size']:.2f}"
                                              if conf else ""))


def record_metadata(info: dict[str, Any], ds: Any, tr: np.ndarray, max_items: int = 60,
                    log: Callable[[str], None] | None = None) -> None:
    """Segmenters and sequence classifiers: the training envelope alone (no feature model yet) in `info`'s
    fingerprint section, read from up to `max_items` training cases; a failure is logged, never fatal."""
    try:
        meta = metadata_fingerprint([ds.items[i] for i in _spread(np.asarray(tr), max_items)], ds.spatial_ndim)
    except Exception as exc:  # noqa: BLE001 -- a fingerprint must never cost a trained model
        (log or LOGGER.info)(f"warning: no training fingerprint for this RUN: {exc}")
        return
    info[FINGERPRINT_KEY] = {"version": VERSION, "metadata": meta, "feature_model": None}


def read_ood_arrays(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The RUN's ood.npz arrays (numbers only, pickles refused), or None when the RUN has none."""
    p = Path(run_dir) / OOD_FILE
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {OOD_FILE}: {exc}", Path(run_dir)) from None


def add_fingerprint(run_dir: str | Path, data: str | Path | Any, coverage: float = 0.9) -> dict[str, Any]:
    """Fit the fingerprint and calibration of an existing classifier RUN on its training DATA (same splits as
    training assigned) and write them into the RUN; the weights, threshold and probabilities do not change."""
    from meddx.data.datasets import Dataset, load_dataset
    from meddx.data.splits import assign_splits
    from meddx.io.run_info import RunInfo
    from meddx.models.registry import load_model
    from meddx.train.config import recorded_val_fraction
    from meddx.transforms.prepare import materialise
    from meddx.transforms.preprocess import Preprocessing

    run = Path(run_dir)
    info = RunInfo.read(run)
    if info.kind != "classifier":
        raise InputError(f"is a {info.kind} RUN; fingerprints are fitted for classifiers", run)
    ds = data if isinstance(data, Dataset) else load_dataset(data)  # as training read it
    if list(ds.class_names) != list(info.class_names):
        raise InputError(f"DATA has classes {ds.class_names}, the RUN {info.class_names}: not its training data", run)
    cfg = info.config
    splits = assign_splits(ds, recorded_val_fraction(cfg), cfg.get("test_fraction", 0.15), cfg.get("seed", 0))
    tr, va = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    if len(va) == 0:
        from meddx.data.splits import _groups, _holdout, _strata

        va = np.sort(_holdout(_strata(ds), _groups(ds), tr, recorded_val_fraction(cfg), cfg.get("seed", 0)))
        tr = np.setdiff1d(tr, va)
    prep = Preprocessing.from_config(info.preprocessing)
    model = load_model(run / "model.keras")
    x_tr = materialise(ds.subset(tr), prep)
    x_va = materialise(ds.subset(va), prep)
    section, calibration, arrays = fit_fingerprint(model, ds, tr, va, x_tr, x_va, info.task, coverage)
    raw = info.to_dict()
    write_fingerprint(run, raw, section, calibration, arrays)
    RunInfo.from_dict(raw).write(run)
    LOGGER.info("fingerprint of %s: %d validation cases, %.1f %% flagged; temperature %.3f", run, len(va),
                100 * section["val_flag_rate"], calibration["temperature"])
    return raw


if __name__ == "__main__":  # python -m meddx.train.fingerprint RUN DATA
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    add_fingerprint(sys.argv[1], sys.argv[2])
