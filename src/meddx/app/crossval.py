"""`meddx train DATA --out RUN --folds K [--engine ray]`: K-fold cross-validation, folds grouped by patient.

Each fold trains a RUN in RUN/fold_<k> (validation = the fold's held-out patients, training = the others); cases of
a source `test` split stay out of every fold. RUN/cv.json holds each fold's validation AUC and their mean and
sample standard deviation. With `engine="ray"` the folds run as parallel Ray tasks (one CPU each: 2 at a time on
a local `num_cpus=2` Ray)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from meddx.app.common import Log, choose_trainer, logger_or
from meddx.errors import ConfigError

CV_FILE = "cv.json"


def cross_validate(data: Any, out: str | Path, cfg: Any, folds: int = 5, engine: str = "local",
                   model: str | None = None, overwrite: bool = False, address: str | None = None,
                   log: Log | None = None) -> dict[str, Any]:
    """Train one RUN per fold into out/fold_<k>; returns (and writes to out/cv.json) the per-fold validation AUC
    with mean and sd."""
    from meddx.data.datasets import Dataset, load_dataset
    from meddx.train.fit import train
    from meddx.utils import atomic_write_json

    log = logger_or(log)
    if folds is None or int(folds) < 2:
        raise ConfigError(f"--folds needs K >= 2, got {folds}")
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown --engine {engine!r} (local or ray)")
    fit, cfg = choose_trainer(data, cfg, model)
    if fit is not train:
        raise ConfigError("--folds supports image classification DATA for now (not segmentation, sequences or "
                          "slice labelling)")
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    pool = np.flatnonzero(np.asarray(ds.splits if ds.splits is not None else [""] * len(ds)) != "test")
    fold_sets = fold_datasets(ds, pool, int(folds), cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{folds}-fold cross-validation of {cfg.model} on {len(pool)} cases "
        f"({len(ds) - len(pool)} test cases left out), engine {engine} -> {out}")
    if engine == "ray":
        results = _folds_on_ray(fold_sets, out, cfg, overwrite, address, log)
    else:
        results = []
        for k, fold in enumerate(fold_sets):
            log(f"fold {k + 1}/{folds}: {int(np.sum(fold.splits == 'train'))} train / "
                f"{int(np.sum(fold.splits == 'val'))} val cases")
            results.append(_fold_result(k, train(fold, out / f"fold_{k}", cfg, overwrite=overwrite, log=log)))
    summary = summarise(results, engine=engine, model=cfg.model, data=str(getattr(ds, "source", data)))
    atomic_write_json(out / CV_FILE, summary)
    for r in results:
        log(f"fold {r['fold'] + 1}: validation AUC {_fmt(r['val_auc'])} ({r['n_train']} train / {r['n_val']} val)")
    log(f"cross-validation ({folds} folds): validation AUC {_fmt(summary['mean_auc'])} "
        f"+/- {_fmt(summary['sd_auc'])} (mean +/- sd); wrote {out / CV_FILE}")
    return summary


def fold_datasets(ds: Any, pool: np.ndarray, k: int, seed: int) -> list[Any]:
    """The K fold datasets over the cases at `pool`: every case's split set to "val" (the fold's held-out patients)
    or "train" (the rest), stratified by label and grouped by patient (`meddx.data.splits.kfold_splits`)."""
    from meddx.data.splits import kfold_splits

    sub = ds.subset(pool)
    out = []
    for _, val in kfold_splits(sub, k=k, seed=seed):
        splits = np.full(len(sub), "train", dtype="<U8")
        splits[val] = "val"
        out.append(dataclasses.replace(sub, splits=splits, extra=dict(sub.extra)))
    return out


def _fold_result(k: int, info: dict[str, Any]) -> dict[str, Any]:
    vm = info.get("val_metrics") or {}
    summary = ((info.get("data") or {}).get("summary") or {})
    counts = summary.get("splits") or {}
    auc = vm.get("auc")
    return {"fold": k, "run": f"fold_{k}", "val_auc": None if auc is None else float(auc),
            "val_accuracy": vm.get("accuracy"), "n_train": _count(counts, "train"), "n_val": _count(counts, "val"),
            "best_epoch": info.get("best_epoch")}


def _count(counts: Any, split: str) -> Any:
    v = counts.get(split) if isinstance(counts, dict) else None
    if isinstance(v, dict):
        return v.get("n", v.get("cases", sum(x for x in v.values() if isinstance(x, (int, float)))))
    return v


def summarise(results: list[dict[str, Any]], **about: Any) -> dict[str, Any]:
    """cv.json: the folds' results, mean and sample sd (ddof=1) of their validation AUCs."""
    aucs = [r["val_auc"] for r in results if r["val_auc"] is not None and not math.isnan(r["val_auc"])]
    mean = float(np.mean(aucs)) if aucs else None
    sd = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None
    return {**about, "folds": len(results), "per_fold": sorted(results, key=lambda r: r["fold"]),
            "mean_auc": mean, "sd_auc": sd}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _folds_on_ray(fold_sets: list[Any], out: Path, cfg: Any, overwrite: bool, address: str | None,
                  log: Log) -> list[dict[str, Any]]:
    """Each fold as a Ray task with one CPU (and one TensorFlow thread), logged as they finish."""
    import ray

    from meddx.app.ray_engine import ray_session

    with ray_session(address):
        task = ray.remote(num_cpus=1, max_retries=1)(_train_fold)
        cfg1 = cfg.updated({"threads": 1}) if hasattr(cfg, "updated") else cfg
        pending = {task.remote(fold, str(out.resolve() / f"fold_{k}"), cfg1, overwrite, k): k
                   for k, fold in enumerate(fold_sets)}
        results = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(done[0])
            try:
                results.append(ray.get(done[0]))
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                if isinstance(cause, ConfigError) or hasattr(cause, "exit_code"):
                    raise cause from None
                raise
            log(f"fold {k + 1}/{len(fold_sets)} done on Ray: validation AUC {_fmt(results[-1]['val_auc'])}")
    return results


def _train_fold(fold: Any, run_dir: str, cfg: Any, overwrite: bool, k: int) -> dict[str, Any]:
    """One fold trained in a Ray worker (logs stay in the worker)."""
    from meddx.train.fit import train

    return _fold_result(k, train(fold, run_dir, cfg, overwrite=overwrite, log=lambda s: None, verbose=0))
