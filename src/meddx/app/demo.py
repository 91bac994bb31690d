"""`meddx demo`: the whole pipeline on built-in synthetic lesion slices (or DATA): train, evaluate, predict,
report, in minutes on a CPU."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from meddx.app.common import Log, logger_or
from meddx.app.evaluate import evaluate_run
from meddx.app.predict import predict_inputs
from meddx.app.report import report_studies
from meddx.errors import DataError


# A fast cnn: 16-32-64 filters, strided stem, one pooling -> a 16x16 Grad-CAM grid at 64 px (an 8x8 grid caps
# the exact pointing game near 0.6 on these 5-10 px lesions) and a global-max-pooling head.
DEMO_MODEL: dict[str, Any] = {"filters": [16, 32, 64], "pools": 1, "pooling": "max"}
# The same without the strided stem: a 32x32 Grad-CAM grid, about 4x the compute. The demo's default: measured on
# the demo data, 40 epochs (AMD EPYC): test AUC 0.989, exact pointing game 0.943; 30 epochs (Intel Xeon, 2026-11-30):
# 0.986 / 0.932, whole demo 2.6 min. DEMO_MODEL, 30 epochs: 0.985 / 0.739 on the AMD box but 0.477 on the Intel one.
# Not robust: 0.08-0.27 on other AMD EPYC boxes (2026-12-02), where training learns a detector offset from the
# lesion (README, Localisation).
FINE_CAM_MODEL: dict[str, Any] = {**DEMO_MODEL, "strided_stem": False}


def run_demo(out: str | Path = "meddx-demo", data: str | Path | None = None, n: int = 1200, size: int = 64,
             epochs: int | None = None, minutes: float = 3.0, seed: int = 0, log: Log | None = None,
             model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic lesion slices (or `data`): train, evaluate, predict, report.

    `model_options` replaces FINE_CAM_MODEL for the synthetic data (e.g. DEMO_MODEL: 4x faster, coarser heatmaps)."""
    from meddx.data.datasets import load_dataset, load_manifest
    from meddx.data.synthetic import CLASS_NAMES, write_synthetic_folder
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    log = logger_or(log)
    t0 = time.monotonic()
    out = Path(out)
    run_dir = out / "run"
    if data is None:
        log(f"[1/5] generating {n} synthetic {size}x{size} slices with and without lesions -> {out / 'data'}")
        manifest = write_synthetic_folder(out / "data", n=n, size=size, seed=seed)
        ds = load_manifest(manifest, class_names=CLASS_NAMES)
        data_path: Path = manifest
    else:
        data_path = Path(data)
        ds = load_dataset(data_path)
        log(f"[1/5] using {data_path}")
    demo_model = model_options or FINE_CAM_MODEL
    # Class-balanced training: its Grad-CAM points at the lesion far more often on the demo data (pointing game
    # 0.898 with, 0.659 without; tests/explain/test_demo_localisation.py), and the demo is about localisation.
    cfg = TrainConfig(epochs=epochs or 30, max_minutes=minutes, seed=seed, patience=8, class_weights=True,
                      image_size=size if data is None else None, model_options=demo_model if data is None else None)
    log("[2/5] training")
    train(ds, run_dir, cfg, overwrite=True, log=log)
    log("[3/5] evaluating on the held-out test split")
    metrics = evaluate_run(run_dir, data_path, out / "eval", split="test", report=True, log=log)
    log("[4/5] predicting with heatmaps")
    test_items = _demo_examples(run_dir, ds)
    predict_inputs(run_dir, test_items, out / "predictions", heatmaps=True, log=lambda s: None)
    log("[5/5] writing a diagnostic report")
    report = report_studies(run_dir, test_items[:1], out / "report", dicom=False, log=log)
    summary = {"out": str(out), "run": str(run_dir), "metrics": str(out / "eval" / "metrics.json"),
               "evaluation_report": str(out / "eval" / "report.html"),
               "predictions": str(out / "predictions" / "predictions.csv"),
               "report": str(report["html"]), "auc": metrics.get("auc"),
               "minutes": round((time.monotonic() - t0) / 60, 2)}
    log("\nmeddx demo finished in {minutes} min. Outputs:\n"
        "  trained model        {run}\n  test metrics         {metrics}\n  evaluation report    {evaluation_report}\n"
        "  predictions+heatmaps {predictions}\n  diagnostic report    {report}".format(**summary))
    return summary


def _demo_examples(run_dir: Path, ds: Any, k: int = 4) -> list[str]:
    """A few test-split files (positives first) for the demo's predict and report steps."""
    rows = list(csv.DictReader((run_dir / "splits.csv").open()))
    test = [r for r in rows if r["split"] == "test"]
    test.sort(key=lambda r: r["label"] != ds.class_names[-1])
    items = [r["item"] for r in test[:k]]
    if not items or not Path(items[0]).exists():
        raise DataError("demo data has no test files to predict on", run_dir)
    return items
