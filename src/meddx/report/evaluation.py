"""Model evaluation report: eval_dir/report.html gathering metrics.json (with CIs), the plots
written next to it, per-class tables, the training curve and the run's data summary."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from meddx.errors import InputError
from meddx.report.document import Doc, write_html
from meddx.utils import atomic_path, read_json

PLOTS = (("roc", "roc.png", "ROC curve"), ("pr", "pr.png", "Precision-recall curve"),
         ("confusion", "confusion.png", "Confusion matrix"), ("calibration", "calibration.png", "Calibration"))
_SCALARS = ("n", "accuracy", "balanced_accuracy", "average_precision", "threshold", "sensitivity", "specificity",
            "ppv", "npv", "f1", "ece", "brier", "dice", "iou", "hd95", "asd")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    if isinstance(x, list):
        return ", ".join(_fmt(v) for v in x)
    return "–" if x is None else str(x)


def _is_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def _summary_table(doc: Doc, summary: Any) -> None:
    """Counts per split and class: a split x class table when nested, else key/value rows."""
    if isinstance(summary, dict) and summary and all(isinstance(v, dict) for v in summary.values()):
        classes: list[str] = []
        for counts in summary.values():
            for c in counts:
                if c not in classes:
                    classes.append(str(c))
        doc.table(["Split", *classes], [[split, *[counts.get(c, 0) for c in classes]]
                                         for split, counts in summary.items()])
    elif isinstance(summary, dict):
        doc.table(None, [[k, _fmt(v)] for k, v in summary.items()])
    else:
        doc.p(str(summary))


def render_evaluation_report(eval_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """Write eval_dir/report.html (opens from disk: plots are relative <img> links to PNGs in eval_dir)."""
    ed = Path(eval_dir)
    metrics_path = ed / "metrics.json"
    if not metrics_path.is_file():
        raise InputError("no metrics.json in the evaluation folder (run `meddx evaluate` first)", ed)
    metrics = read_json(metrics_path)
    run = read_json(Path(run_dir) / "run.json") if run_dir and (Path(run_dir) / "run.json").is_file() else {}

    doc = Doc(title="meddx model evaluation")
    doc.h("Model evaluation report", 1)
    if run:
        doc.table(None, [["Model", run.get("model", "?")], ["Task", run.get("task", "?")],
                         ["meddx version", run.get("meddx_version", "?")], ["Trained", run.get("created", "?")],
                         ["Classes", ", ".join(run.get("class_names") or [])]])
    doc.h("Summary metrics")
    rows = []
    if "auc" in metrics:
        ci = metrics.get("auc_ci") or [None, None]
        level = metrics.get("ci_level", 0.95)
        rows.append(["AUC", f"{_fmt(metrics['auc'])} ({int(round(100 * float(level)))}% CI {_fmt(ci[0])}–{_fmt(ci[1])})"])
    rows += [[k, _fmt(metrics[k])] for k in _SCALARS if k in metrics and not isinstance(metrics[k], dict)]
    doc.table(None, rows)
    for w in metrics.get("warnings") or []:
        doc.p(f"Warning: {w}", "borderline")

    per_class = metrics.get("per_class") or []
    if per_class:
        doc.h("Per class")
        cols = [c for c in ("auc", "average_precision", "sensitivity", "specificity", "ppv", "npv", "f1", "support", "n")
                if any(c in pc for pc in per_class)]
        doc.table(["Class", *cols], [[pc.get("name", pc.get("index")), *[_fmt(pc.get(c)) for c in cols]]
                                     for pc in per_class])
    cm = metrics.get("confusion_matrix")
    if cm:
        doc.h("Confusion matrix (rows: truth, columns: prediction)")
        rows_n = metrics.get("confusion_matrix_rows") or [str(i) for i in range(len(cm))]
        cols_n = metrics.get("confusion_matrix_cols") or [str(i) for i in range(len(cm[0]))]
        doc.table(["", *cols_n], [[r, *row] for r, row in zip(rows_n, cm)])

    doc.h("Plots")
    named = metrics.get("plots") or {}
    for key, default, caption in PLOTS:
        name = named.get(key, default)
        p = ed / name
        if p.is_file() and _is_png(p):
            doc.img(name, caption)
    if run_dir is not None:
        curves = Path(run_dir) / "training_curves.png"
        if curves.is_file() and _is_png(curves):
            target = ed / "training_curves.png"
            if curves.resolve() != target.resolve():
                with atomic_path(target, suffix=".png") as tmp:  # a copy keeps the folder self-contained
                    shutil.copyfile(curves, tmp)
            doc.h("Training")
            doc.img(target.name, "Training curves (loss / metrics per epoch)")
    summary = (run.get("data") or {}).get("summary")
    if summary:
        doc.h("Data")
        src = (run.get("data") or {}).get("source")
        if src:
            doc.p(f"Source: {src}")
        _summary_table(doc, summary)
    return write_html(doc, ed / "report.html")
