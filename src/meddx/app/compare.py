"""`meddx compare` (was `meddx/compare.py`): train several models (CNN registry and classic baselines) on the SAME split of one
npz and write one table (AUC with 95% bootstrap CI, accuracy, training and inference time) plus one ROC plot.

Training arrays = the npz's `train` split; evaluation = its `test` split, or `val` when there is no test
split (recorded in the table: e.g. BreastMNIST's trainval file). CNNs hold out part of the training
split for model selection (as `meddx train` does); classic models fit on all of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meddx.errors import ConfigError, DataError

__all__ = ["compare_models", "CLASSIC_NAMES"]

CLASSIC_NAMES = ("svm", "logreg", "dbn")


def _load(data: Path) -> tuple[dict[str, np.ndarray], str]:
    if not data.is_file() or data.suffix.lower() != ".npz":
        raise DataError("compare needs a MedMNIST-style .npz file", data)
    with np.load(data) as z:
        arrs = {k: z[k] for k in z.files}
    if "train_images" not in arrs or "train_labels" not in arrs:
        raise DataError("npz has no train_images/train_labels", data)
    split = "test" if "test_images" in arrs else "val" if "val_images" in arrs else ""
    if not split:
        raise DataError("npz has neither a test nor a val split to evaluate on", data)
    return arrs, split


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return (y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y).astype(np.int64)


def _auc(y: np.ndarray, probs: np.ndarray) -> float:
    from meddx.evaluate.classification import macro_auc_ovr, roc_auc

    return roc_auc(y, probs[:, 1]) if probs.shape[1] == 2 else macro_auc_ovr(y, probs)


def _run_cnn(name: str, arrs: dict[str, np.ndarray], split: str, work: Path, seed: int, epochs: int | None,
             log: Callable[[str], None]) -> tuple[np.ndarray, float, float]:
    from meddx.data.datasets import load_dataset
    from meddx.transforms.prepare import materialise
    from meddx.infer import load as load_run
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    work.mkdir(parents=True, exist_ok=True)
    tr_npz, ev_npz = work / "train.npz", work / "eval.npz"
    np.savez(tr_npz, train_images=arrs["train_images"], train_labels=arrs["train_labels"])
    np.savez(ev_npz, test_images=arrs[f"{split}_images"], test_labels=arrs[f"{split}_labels"])
    cfg = TrainConfig().updated({"model": name, "seed": seed, "epochs": epochs}, source="compare")
    t0 = time.perf_counter()
    train(str(tr_npz), work / f"run_{name}", cfg, overwrite=True, log=log, verbose=0)
    t_train = time.perf_counter() - t0
    run = load_run(work / f"run_{name}")
    ds = load_dataset(str(ev_npz))
    x = materialise(ds, run.preprocessing, use_cache=False, progress=False)
    t0 = time.perf_counter()
    probs = run.predict_proba(x)
    return np.asarray(probs), t_train, time.perf_counter() - t0


def _run_classic(name: str, arrs: dict[str, np.ndarray], split: str, seed: int) -> tuple[np.ndarray, float, float]:
    from meddx.classic.models import build_classic

    model = build_classic(name, seed=seed)
    t0 = time.perf_counter()
    model.fit(arrs["train_images"], _labels(arrs["train_labels"]))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = model.predict_proba(arrs[f"{split}_images"])
    return np.asarray(probs), t_train, time.perf_counter() - t0


def compare_models(data: str | Path, models: Sequence[str], out: str | Path, seed: int = 0,
                   log: Callable[[str], None] | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train each of `models` on the same split of `data` (npz); write comparison.{csv,md,json} and roc.png
    to `out`; return {"eval_split", "n", "rows": [...]}. `epochs` caps CNN training (None: automatic)."""
    from meddx.evaluate.classification import bootstrap_ci
    from meddx.evaluate.plots import plot_roc_comparison
    from meddx.models.registry import model_spec
    from meddx.utils import atomic_write_json, atomic_write_text

    from meddx.app.common import logger_or

    log = logger_or(log)
    names = [m.strip().lower() for m in models if m.strip()]
    if not names:
        raise ConfigError("--models needs at least one model name")
    for m in names:
        if m not in CLASSIC_NAMES:
            model_spec(m)  # raises ConfigError for an unknown name
    data = Path(data)
    arrs, split = _load(data)
    y = _labels(arrs[f"{split}_labels"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for m in names:
        log(f"compare: training {m} ...")
        if m in CLASSIC_NAMES:
            probs, t_tr, t_inf = _run_classic(m, arrs, split, seed)
        else:
            probs, t_tr, t_inf = _run_cnn(m, arrs, split, out / "work", seed, epochs, log)
        auc = _auc(y, probs)
        lo, hi = bootstrap_ci(lambda a, b: _auc(a, b), y, probs, n_boot=1000, seed=seed)
        pred = probs.argmax(axis=1)
        rows.append({"model": m, "auc": auc, "auc_ci_low": lo, "auc_ci_high": hi,
                     "accuracy": float(np.mean(pred == y)), "train_seconds": t_tr,
                     "inference_ms_per_image": 1000.0 * t_inf / len(y), "eval_split": split, "n_eval": int(len(y))})
        curves[m] = (y, probs if probs.shape[1] > 2 else probs[:, 1])
        log(f"compare: {m}: AUC {auc:.3f} [{lo:.3f}, {hi:.3f}], accuracy {rows[-1]['accuracy']:.3f}, "
            f"train {t_tr:.1f} s")
    cols = list(rows[0])
    csv = ",".join(cols) + "\n" + "".join(",".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                                                   for c in cols) + "\n" for r in rows)
    atomic_write_text(out / "comparison.csv", csv)
    note = (f"Evaluated on the `{split}` split (n={len(y)})"
            + (" -- the data has NO test split, so this is the validation split (no model was selected on it)."
               if split == "val" else "."))
    md = [f"# Model comparison: {data.name}", "", note, "",
          "| model | AUC | AUC 95% CI | accuracy | training (s) | inference (ms/image) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['auc']:.3f} | [{r['auc_ci_low']:.3f}, {r['auc_ci_high']:.3f}] | "
           f"{r['accuracy']:.3f} | {r['train_seconds']:.1f} | {r['inference_ms_per_image']:.3f} |" for r in rows]
    atomic_write_text(out / "comparison.md", "\n".join(md) + "\n")
    plot_roc_comparison(curves, out / "roc.png", title=f"ROC on {split} split: {data.name}")
    result = {"data": str(data), "eval_split": split, "n": int(len(y)), "note": note, "rows": rows}
    atomic_write_json(out / "comparison.json", result)
    return result
