"""Evaluation plots (ROC, PR, confusion matrix, calibration, training curves) written as PNGs
atomically, and ``write_classification_outputs`` which writes metrics.json plus all plots.

Matplotlib is imported inside the functions with the Agg backend; figures are built with
``matplotlib.figure.Figure`` (no pyplot global state), so this is safe in scripts and tests.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.evaluate import classification as cls
from meddx.utils import atomic_path, atomic_write_json

DPI = 120


def _figure(width: float = 6.0, height: float = 5.0):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _columns(y_true: Any, probs: Any, class_names: Sequence[str], task: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, binary truth, score) per curve: binary -> the positive class only; multiclass ->
    one-vs-rest per class; multilabel -> per label."""
    p = np.asarray(probs, dtype=np.float64)
    names = [str(c) for c in class_names]
    if task == "binary":
        y = cls._binary_labels(y_true)
        p1 = cls._positive_probs(p, y.shape[0])
        return [(names[1] if len(names) > 1 else "positive", y, p1)]
    if task == "multiclass":
        y, pm = cls._multiclass_inputs(y_true, p)
        return [(names[k], (y == k).astype(np.int64), pm[:, k]) for k in range(pm.shape[1])]
    if task == "multilabel":
        y, pm = cls._multilabel_inputs(y_true, p)
        return [(names[k], y[:, k], pm[:, k]) for k in range(pm.shape[1])]
    raise InputError(f"unknown task {task!r}; expected one of {cls.TASKS}")


def _infer_task(y_true: Any, probs: Any) -> str:
    p = np.asarray(probs)
    y = np.asarray(y_true)
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] <= 2 and y.ndim == 1):
        return "binary"
    if y.ndim == 2 and y.shape == p.shape and not np.all(y.sum(1) == 1):
        return "multilabel"
    return "multiclass"


def _macro_roc(cols: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Macro-average ROC curve: mean TPR of the per-class curves on a common FPR grid."""
    from sklearn.metrics import roc_curve

    grid = np.linspace(0.0, 1.0, 201)
    tprs = []
    for _, y, s in cols:
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, s)
            tprs.append(np.interp(grid, fpr, tpr))
    if not tprs:
        return None
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return grid, mean


def _legend(ax: Any, n: int) -> None:
    ax.legend(loc="lower right" if n <= 8 else "center left", fontsize=8 if n <= 8 else 6,
              bbox_to_anchor=None if n <= 8 else (1.01, 0.5), frameon=True)


def _unit_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Both axes on [0, 1] (a hair of margin so curves on the edges show), labels, title, light grid."""
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot_roc(y_true: Any, probs: Any, class_names: Sequence[str], path: str | Path, task: str = "binary",
             threshold: float | None = None, title: str | None = None) -> Path:
    """ROC curve(s) with AUC in the legend: binary -> positive class (with the operating point
    when ``threshold`` is given); multiclass/multilabel -> one curve per class + macro average."""
    from sklearn.metrics import roc_curve

    cols = _columns(y_true, probs, class_names, task)
    fig = _figure(7.5 if len(cols) > 8 else 6.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    aucs = []
    for name, y, s in cols:
        if not 0 < y.sum() < y.size:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = cls.roc_auc(y, s)
        aucs.append(auc)
        ax.plot(fpr, tpr, lw=2 if len(cols) == 1 else 1.2, label=f"{name} (AUC = {auc:.3f})")
        if task == "binary" and threshold is not None:
            pred = s >= threshold
            sens = pred[y == 1].mean()
            fpr_op = pred[y == 0].mean()
            ax.plot([fpr_op], [sens], "o", color="black", label=f"threshold {threshold:.3g}")
    if len(cols) > 1:
        macro = _macro_roc(cols)
        if macro is not None:
            ax.plot(macro[0], macro[1], color="black", lw=2.2, ls="-",
                    label=f"macro average (mean AUC = {np.mean(aucs):.3f})")
    if not aucs:
        ax.text(0.5, 0.5, "ROC undefined: only one class present", ha="center", va="center")
    _unit_axes(ax, "False positive rate (1 - specificity)", "True positive rate (sensitivity)",
               title or f"ROC curve{'s' if len(cols) > 1 else ''} (n = {len(cols[0][1])})")
    _legend(ax, len(cols) + 2)
    return _save(fig, path)


def plot_pr(y_true: Any, probs: Any, class_names: Sequence[str], path: str | Path, task: str = "binary",
            title: str | None = None) -> Path:
    """Precision-recall curve(s) with average precision in the legend; the binary plot also
    shows the prevalence (a random classifier's precision)."""
    from sklearn.metrics import precision_recall_curve

    cols = _columns(y_true, probs, class_names, task)
    fig = _figure(7.5 if len(cols) > 8 else 6.0, 5.0)
    ax = fig.add_subplot()
    drawn = 0
    for name, y, s in cols:
        if y.sum() == 0:
            continue
        prec, rec, _ = precision_recall_curve(y, s)
        ap = cls._average_precision(y, s)
        ax.step(rec, prec, where="post", lw=2 if len(cols) == 1 else 1.2, label=f"{name} (AP = {ap:.3f})")
        drawn += 1
        if len(cols) == 1:
            ax.axhline(y.mean(), ls="--", color="grey", lw=1, label=f"prevalence {y.mean():.3f}")
    if not drawn:
        ax.text(0.5, 0.5, "PR undefined: no positive case", ha="center", va="center")
    _unit_axes(ax, "Recall (sensitivity)", "Precision (PPV)", title or f"Precision-recall (n = {len(cols[0][1])})")
    if drawn:
        ax.legend(loc="lower left" if len(cols) <= 8 else "center left", fontsize=8 if len(cols) <= 8 else 6,
                  bbox_to_anchor=None if len(cols) <= 8 else (1.01, 0.5))
    return _save(fig, path)


def plot_confusion(cm: Any, class_names: Sequence[str], path: str | Path, col_names: Sequence[str] | None = None,
                   title: str | None = None) -> Path:
    """Confusion matrix with counts in the cells and colours normalised per row (true class),
    so small classes stay readable. ``col_names`` defaults to ``class_names`` (predicted)."""
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2:
        raise InputError(f"confusion matrix must be 2-D, got shape {m.shape}")
    rows = [str(c) for c in class_names]
    cols = [str(c) for c in (col_names if col_names is not None else class_names)]
    is_multilabel = list(cols) == ["TN", "FP", "FN", "TP"] and m.shape[1] == 4
    row_sum = m.sum(axis=1, keepdims=True)
    if is_multilabel:  # colour TN/FP by the negatives, FN/TP by the positives (spec. / sens.)
        den = np.concatenate([np.repeat(m[:, :2].sum(1, keepdims=True), 2, 1),
                              np.repeat(m[:, 2:].sum(1, keepdims=True), 2, 1)], axis=1)
    else:
        den = np.repeat(row_sum, m.shape[1], axis=1)
    norm = np.divide(m, den, out=np.zeros_like(m), where=den > 0)
    fig = _figure(max(4.5, 0.75 * len(cols) + 3.5), max(3.5, 0.5 * len(rows) + 2.0))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true negatives / positives" if is_multilabel else "fraction of row (true class)")
    fontsize = 10 if m.size <= 64 else 7
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{norm[i, j]:.0%}" if m.size <= 36 else f"{int(m[i, j])}",
                    ha="center", va="center", fontsize=fontsize, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45 if max(map(len, cols)) > 4 else 0, ha="right"
                  if max(map(len, cols)) > 4 else "center")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("outcome" if is_multilabel else "Predicted class")
    ax.set_ylabel("label" if is_multilabel else "True class")
    ax.set_title(title or f"Confusion matrix (n = {int(m.sum() if not is_multilabel else row_sum.max())})")
    return _save(fig, path)


def plot_calibration(y_true: Any, probs: Any, path: str | Path, task: str = "binary", n_bins: int = 10,
                     title: str | None = None) -> Path:
    """Reliability diagram (observed fraction vs mean predicted probability per bin) with ECE
    and Brier score in the title, above a histogram of the predicted confidences."""
    table = cls.calibration_bins(y_true, probs, n_bins=n_bins, task=task)
    ece = cls.expected_calibration_error(y_true, probs, n_bins=n_bins, task=task)
    brier = cls.brier_score(y_true, probs, task=task)
    conf, _, kind = cls._calibration_pairs(y_true, probs, task)
    fig = _figure(6.0, 6.5)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    bins = [b for b in table["bins"] if b["count"]]
    if bins:
        centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
        ax.bar(centers, [b["observed"] for b in bins], width=1.0 / n_bins, alpha=0.35, edgecolor="tab:blue",
               color="tab:blue", label="observed per bin")
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], "o-", color="tab:red",
                label="mean predicted vs observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    what = {"positive-class": "P(positive)", "top-label": "top-class confidence",
            "pooled-labels": "label probability (all labels)"}[kind]
    ax.set_ylabel("Observed frequency" if kind != "top-label" else "Accuracy")
    ax.set_title(title or f"Calibration: ECE = {_fmt(ece)}, Brier = {_fmt(brier)}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hx = fig.add_subplot(gs[1], sharex=ax)
    hx.hist(conf, bins=np.linspace(0, 1, n_bins + 1), color="tab:grey", edgecolor="white")
    hx.set_xlabel(f"Predicted {what}")
    hx.set_ylabel("Count")
    return _save(fig, path)


def read_history_csv(history_csv_path: str | Path) -> dict[str, list[float]]:
    """Numeric columns of a Keras CSVLogger file (non-numeric cells become nan)."""
    path = Path(history_csv_path)
    if not path.is_file():
        raise InputError("training history CSV not found", path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError("training history CSV has no rows", path)
    out: dict[str, list[float]] = {}
    for key in rows[0].keys():
        if key is None:
            continue
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(key, "")))
            except (TypeError, ValueError):
                vals.append(float("nan"))
        if np.isfinite(vals).any():
            out[key.strip()] = vals
    return out


def plot_training_curves(history_csv_path: str | Path, path: str | Path, title: str | None = None) -> Path:
    """One panel per metric in a Keras CSVLogger history (loss, auc, accuracy, learning rate...),
    training and ``val_`` curves together; the best validation epoch is marked."""
    hist = read_history_csv(history_csv_path)
    x = hist.pop("epoch", None)
    n_rows = len(next(iter(hist.values()))) if hist else 0
    epochs = np.asarray(x if x is not None else range(n_rows), dtype=np.float64)
    if x is not None:
        epochs = epochs + 1  # CSVLogger counts from 0
    bases = []
    for key in hist:
        base = key[4:] if key.startswith("val_") else key
        if base not in bases:
            bases.append(base)
    if not bases:
        raise InputError("training history CSV has no metric columns", history_csv_path)
    bases.sort(key=lambda b: (b != "loss", b in ("lr", "learning_rate")))  # loss first, lr last
    ncol = min(3, len(bases))
    nrow = math.ceil(len(bases) / ncol)
    fig = _figure(4.2 * ncol, 3.3 * nrow)
    for i, base in enumerate(bases):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for key, style in ((base, "-"), ("val_" + base, "--")):
            if key in hist:
                vals = np.asarray(hist[key])
                ax.plot(epochs, vals, style, marker="." if len(vals) < 40 else None, label=key)
                if key.startswith("val_") and np.isfinite(vals).any():
                    best = int(np.nanargmin(vals) if "loss" in base else np.nanargmax(vals))
                    ax.plot(epochs[best], vals[best], "*", color="black", ms=10,
                            label=f"best {vals[best]:.3g} (epoch {epochs[best]:g})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(base)
        ax.set_title(base)
        if base in ("lr", "learning_rate") and np.all(np.asarray(hist[base])[np.isfinite(hist[base])] > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"Training history ({n_rows} epochs)")
    return _save(fig, path)


def plot_roc_comparison(models: Mapping[str, tuple[Any, Any]], path: str | Path, task: str | None = None,
                        title: str | None = None) -> Path:
    """Several models on one ROC plot: binary -> positive-class ROC; multiclass/multilabel ->
    macro-average ROC, each labelled with its AUC (mean one-vs-rest / per-label AUC)."""
    from sklearn.metrics import roc_curve

    if not models:
        raise InputError("no models to compare")
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    for name, (y_true, probs) in models.items():
        t = task or _infer_task(y_true, probs)
        p = np.asarray(probs)
        k = 2 if t == "binary" else p.shape[1]
        cols = _columns(y_true, probs, [str(i) for i in range(k)], t)
        if t == "binary":
            _, y, s = cols[0]
            if not 0 < y.sum() < y.size:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            auc = cls.roc_auc(y, s)
        else:
            macro = _macro_roc(cols)
            if macro is None:
                continue
            fpr, tpr = macro
            auc = (cls.macro_auc_ovr if t == "multiclass" else cls.multilabel_auc)(y_true, probs)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC = {auc:.3f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title or "ROC comparison")
    ax.grid(alpha=0.3)
    _legend(ax, len(models) + 1)
    return _save(fig, path)


def write_classification_outputs(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    task: str,
    out_dir: str | Path,
    threshold: float | Sequence[float] = 0.5,
    groups: Any = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Compute ``classification_metrics``, write roc.png, pr.png, confusion.png, calibration.png
    and then metrics.json (atomically, last, so its presence means the folder is complete).
    Returns the metrics dict with ``plots`` = {kind: file name}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = cls.classification_metrics(y_true, probs, class_names, task=task, threshold=threshold,
                                         groups=groups, n_boot=n_boot, seed=seed)
    thr = metrics["threshold"] if task == "binary" else None
    plot_roc(y_true, probs, class_names, out / "roc.png", task=task, threshold=thr)
    plot_pr(y_true, probs, class_names, out / "pr.png", task=task)
    plot_confusion(metrics["confusion_matrix"], metrics["confusion_matrix_rows"], out / "confusion.png",
                   col_names=metrics["confusion_matrix_cols"])
    plot_calibration(y_true, probs, out / "calibration.png", task=task)
    metrics["plots"] = {"roc": "roc.png", "pr": "pr.png", "confusion": "confusion.png",
                        "calibration": "calibration.png"}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
