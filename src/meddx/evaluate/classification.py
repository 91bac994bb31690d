"""Classification metrics over numpy arrays: AUC (+ bootstrap CI), operating points,
per-class sensitivity/specificity, confusion matrix and calibration.

Conventions (used everywhere in meddx):
- binary: ``y_true`` ints in {0, 1}; scores/probs are P(class index 1); an operating point
  ``threshold`` predicts positive when ``score >= threshold``.
- multiclass: ``y_true`` ints (N,) in [0, K); ``probs`` (N, K); prediction = argmax; AUC is the
  unweighted mean of one-vs-rest AUCs (as MedMNIST).
- multilabel: ``y_true`` (N, K) 0/1; ``probs`` (N, K) independent sigmoids; AUC is the mean of
  per-label AUCs.
Undefined quantities (e.g. AUC with one class present) are ``nan`` in the low-level functions
and ``None`` (JSON null) in the dicts returned by :func:`classification_metrics`.
Never imports keras/tensorflow.

Longer than 500 lines on purpose: the metric family shares its input checks and bootstrap machinery (AUC, CIs,
operating points, calibration, per-class tables, conformal sets); each function is small and independent.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from meddx.errors import InputError

TASKS = ("binary", "multiclass", "multilabel")
MIN_CI_GROUPS = 5  # fewer patients/sources than this: a patient-level bootstrap CI is flagged as rough


# --------------------------------------------------------------------------- helpers


def _nan_to_none(x: Any) -> Any:
    """Recursively turn numpy scalars into Python values and nan/inf into None (valid JSON)."""
    if isinstance(x, dict):
        return {str(k): _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_nan_to_none(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _binary_labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"binary labels must be 1-D, got shape {y.shape}")
    if y.size and not np.all(np.isin(y, (0, 1))):
        raise InputError(f"binary labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
    return y.astype(np.int64)


def _scores_1d(scores: Any, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or s.shape[0] != n:
        raise InputError(f"scores must have shape ({n},), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinite values")
    return s


# --------------------------------------------------------------------------- AUC


def _auc_from_levels(levels: np.ndarray, n_levels: int, y: np.ndarray, w: np.ndarray | None) -> float:
    """Mann-Whitney AUC from score ranks (`levels` = index of each score among the sorted unique
    scores), optionally with integer case weights (a bootstrap resample). Ties count 1/2."""
    wpos = y.astype(np.float64) if w is None else w * y
    wneg = (1.0 - y) if w is None else w * (1.0 - y)
    pos = np.bincount(levels, weights=wpos, minlength=n_levels)
    neg = np.bincount(levels, weights=wneg, minlength=n_levels)
    p_tot, n_tot = pos.sum(), neg.sum()
    if p_tot <= 0 or n_tot <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (p_tot * n_tot))  # no BLAS: tiny vectors


def roc_auc(y_true: Any, scores: Any) -> float:
    """Binary ROC AUC (probability a random positive outscores a random negative, ties 1/2);
    ``nan`` when only one class is present. Matches sklearn.metrics.roc_auc_score."""
    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    _, levels = np.unique(s, return_inverse=True)
    return _auc_from_levels(levels.ravel(), int(levels.max()) + 1 if levels.size else 0, y, None)


def _multiclass_inputs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise InputError(f"multiclass probabilities must be (N, K), got shape {p.shape}")
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape == p.shape and np.all(np.isin(y, (0, 1))) and np.all(y.sum(1) == 1):
        y = y.argmax(axis=1)  # one-hot labels
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise InputError(f"labels shape {y.shape} does not match probabilities {p.shape}")
    if y.size and (not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= p.shape[1]):
        raise InputError(f"labels must be integers in [0, {p.shape[1]}), got {np.unique(y)[:10].tolist()}")
    if not np.all(np.isfinite(p)):
        raise InputError("probabilities contain NaN or infinite values")
    return y.astype(np.int64), p


def _multilabel_inputs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim == 1:
        p = p[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim != 2 or y.shape != p.shape:
        raise InputError(f"multilabel labels {y.shape} and probabilities {p.shape} must both be (N, K)")
    if y.size and not np.all(np.isin(y, (0, 1))):
        raise InputError("multilabel labels must be 0/1")
    if not np.all(np.isfinite(p)):
        raise InputError("probabilities contain NaN or infinite values")
    return y.astype(np.int64), p


def per_class_auc_ovr(y_true_int: Any, probs: Any) -> np.ndarray:
    """One-vs-rest AUC per class (K,); ``nan`` for a class absent (or alone) in ``y_true``."""
    y, p = _multiclass_inputs(y_true_int, probs)
    return np.array([roc_auc((y == k).astype(np.int64), p[:, k]) for k in range(p.shape[1])])


def macro_auc_ovr(y_true_int: Any, probs: Any) -> float:
    """Unweighted mean of one-vs-rest AUCs over classes (MedMNIST's multi-class AUC);
    classes whose AUC is undefined are left out; ``nan`` when none is defined."""
    aucs = per_class_auc_ovr(y_true_int, probs)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def per_label_auc(y_true: Any, probs: Any) -> np.ndarray:
    """AUC of each label column (K,) for multilabel data; ``nan`` where a label is constant."""
    y, p = _multilabel_inputs(y_true, probs)
    return np.array([roc_auc(y[:, k], p[:, k]) for k in range(p.shape[1])])


def multilabel_auc(y_true: Any, probs: Any) -> float:
    """Mean of per-label AUCs (labels with one class only are left out; ``nan`` if none left)."""
    aucs = per_label_auc(y_true, probs)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


# --------------------------------------------------------------------------- bootstrap


def _class_presence(y: np.ndarray, w: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """Which classes (1-D labels) or which label values (2-D indicator) carry weight."""
    if y.ndim == 1:
        if codes is None:
            codes = np.unique(y, return_inverse=True)[1].ravel()
        return np.bincount(codes, weights=w) > 0
    pos = np.sum(w[:, None] * y, axis=0)
    neg = np.sum(w[:, None] * (1 - y), axis=0)
    return np.concatenate([pos > 0, neg > 0])


class _FastAUC:
    """Precomputed score ranks of every class/label column, so one bootstrap resample (integer
    case weights) costs two bincounts over all columns at once instead of K sorts."""

    def __init__(self, metric: Callable, y: np.ndarray, s: np.ndarray):
        if metric is roc_auc:
            yb = _binary_labels(y)
            ys, ss = yb[:, None], _scores_1d(s, yb.shape[0])[:, None]
        elif metric is macro_auc_ovr:
            yi, ss = _multiclass_inputs(y, s)
            ys = (yi[:, None] == np.arange(ss.shape[1])[None, :]).astype(np.int64)
        else:  # multilabel_auc
            ys, ss = _multilabel_inputs(y, s)
        levels = np.empty(ss.shape, dtype=np.int64)
        offsets = []
        total = 0
        for k in range(ss.shape[1]):
            _, lv = np.unique(ss[:, k], return_inverse=True)
            levels[:, k] = lv.ravel() + total
            offsets.append(total)
            total += int(lv.max()) + 1 if lv.size else 1
        rows = np.broadcast_to(np.arange(ss.shape[0])[:, None], ss.shape)
        is_pos = ys == 1
        self.pos_levels, self.pos_rows = levels[is_pos], rows[is_pos]
        self.neg_levels, self.neg_rows = levels[~is_pos], rows[~is_pos]
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.seg = np.repeat(np.arange(len(offsets)), np.diff(np.append(self.offsets, total)))
        self.total = total

    def __call__(self, w: np.ndarray) -> float:
        pos = np.bincount(self.pos_levels, weights=w[self.pos_rows], minlength=self.total)
        neg = np.bincount(self.neg_levels, weights=w[self.neg_rows], minlength=self.total)
        below = np.cumsum(neg) - neg  # negatives strictly below each level, over all columns
        below -= below[self.offsets][self.seg]  # ... restricted to the level's own column
        num = np.add.reduceat(pos * (below + 0.5 * neg), self.offsets)
        p_tot = np.add.reduceat(pos, self.offsets)
        n_tot = np.add.reduceat(neg, self.offsets)
        ok = (p_tot > 0) & (n_tot > 0)
        if not ok.any():
            return float("nan")
        return float(np.mean(num[ok] / (p_tot[ok] * n_tot[ok])))


def bootstrap_values(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    scores: Any,
    n_boot: int = 1000,
    seed: int = 0,
    groups: Any = None,
) -> tuple[np.ndarray, int]:
    """Bootstrap distribution of ``metric(y_true, scores)``: (valid values, number skipped).

    Resamples cases with replacement, or whole groups (e.g. patients) when ``groups`` is given,
    so correlated cases stay together. A resample is skipped when a class present in the full
    data is absent from it, or when the metric is undefined (nan) on it. Deterministic for a
    given seed. ``metric`` must not depend on case order.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores)
    n = y.shape[0]
    if s.shape[0] != n:
        raise InputError(f"labels ({n}) and scores ({s.shape[0]}) have different lengths")
    if n == 0:
        return np.zeros(0), int(n_boot)
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape[0] != n:
            raise InputError(f"groups ({g.shape[0]}) and labels ({n}) have different lengths")
        _, g_inv = np.unique(g, return_inverse=True)
        g_inv = g_inv.ravel()
        n_groups = int(g_inv.max()) + 1
    fast = _FastAUC(metric, y, s) if metric in (roc_auc, macro_auc_ovr, multilabel_auc) else None
    codes = np.unique(y, return_inverse=True)[1].ravel() if y.ndim == 1 else None
    full = _class_presence(y, np.ones(n), codes)
    values: list[float] = []
    skipped = 0
    for _ in range(int(n_boot)):
        if groups is None:
            w = np.bincount(rng.integers(0, n, n), minlength=n)
        else:
            counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
            w = counts[g_inv]
        wf = w.astype(np.float64)
        if not np.array_equal(_class_presence(y, wf, codes), full):
            skipped += 1
            continue
        if fast is not None:
            v = fast(wf)
        else:
            idx = np.repeat(np.arange(n), w)
            v = float(metric(y[idx], s[idx]))
        if not math.isfinite(v):
            skipped += 1
            continue
        values.append(v)
    return np.asarray(values, dtype=np.float64), skipped


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    scores: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval (low, high) of ``metric``.

    Resamples cases, or whole groups (patients) when ``groups`` is given; skips resamples
    where a class is absent; seeded and deterministic. (nan, nan) if no resample is usable.
    """
    values, _ = bootstrap_values(metric, y_true, scores, n_boot=n_boot, seed=seed, groups=groups)
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


# --------------------------------------------------------------------------- curves, thresholds


def roc_points(y_true: Any, scores: Any) -> dict[str, list[float]]:
    """ROC curve points {fpr, tpr, thresholds} (sklearn's, first threshold +inf dropped to 1+max)."""
    from sklearn.metrics import roc_curve

    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    if len(np.unique(y)) < 2:
        return {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thr = roc_curve(y, s)
    thr = np.where(np.isfinite(thr), thr, s.max() + 1.0)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def pr_points(y_true: Any, scores: Any) -> dict[str, Any]:
    """Precision-recall points {precision, recall, thresholds, average_precision, prevalence}."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    if y.sum() == 0:
        return {"precision": [], "recall": [], "thresholds": [], "average_precision": float("nan"),
                "prevalence": 0.0}
    prec, rec, thr = precision_recall_curve(y, s)
    return {"precision": prec.tolist(), "recall": rec.tolist(), "thresholds": thr.tolist(),
            "average_precision": float(average_precision_score(y, s)), "prevalence": float(y.mean())}


def youden_threshold(y_true: Any, scores: Any) -> float:
    """Operating point maximising Youden's J = sensitivity + specificity - 1 (positive when
    ``score >= threshold``). Choose it on validation data, store it, re-use it on test.
    Returns 0.5 when only one class is present (J is undefined).

    The J-maximising cut is the score of one validation case; returning it as such would put that case exactly
    on the threshold, so the same case scored a hair lower (another batch size, thread count or runtime changes
    the last float bits) would flip to negative. The threshold returned is therefore the midpoint between that
    cut score and the next lower distinct validation score: every validation case is classified exactly as at
    the cut, with the widest margin on both sides. When the cut is the lowest score (everything positive) there
    is no lower score and the cut itself is returned."""
    from sklearn.metrics import roc_curve

    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    ok = np.isfinite(thr)
    j = (tpr - fpr)[ok]
    cut = float(thr[ok][int(np.argmax(j))])  # first max = highest threshold among ties
    lower = s[s < cut]
    if lower.size == 0:
        return cut
    mid = (cut + float(lower.max())) / 2.0
    return float(mid) if mid > lower.max() else cut  # adjacent floats: the midpoint rounds onto one of them


def robust_threshold(y_true: Any, scores: Any, prior: float | None = 0.5, prior_cases: float = 50.0,
                     n_boot: int = 200, seed: int = 0) -> float:
    """Youden operating point that survives small validation sets: the median Youden threshold over bootstrap
    resamples of the validation cases, shrunk toward `prior` (0.5: the operating point of class-balanced
    training) with weight n_min / (n_min + `prior_cases`), n_min = cases of the rarer class. With hundreds of
    cases per class the validation data decide; with a dozen the prior does (`prior=None`: no shrinkage)."""
    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    n_min = int(min(np.sum(y == 1), np.sum(y == 0)))
    if n_min == 0:
        return 0.5 if prior is None else float(prior)
    rng = np.random.default_rng(seed)
    cuts = []
    for _ in range(n_boot):
        k = rng.integers(0, y.shape[0], y.shape[0])
        if 0 < y[k].sum() < k.size:
            cuts.append(youden_threshold(y[k], s[k]))
    t = float(np.median(cuts)) if cuts else youden_threshold(y, s)
    if prior is None:
        return t
    w = n_min / (n_min + prior_cases)
    return float(w * t + (1.0 - w) * prior)


def threshold_for_sensitivity(y_true: Any, scores: Any, target: float = 0.9) -> float:
    """Highest threshold whose sensitivity is >= ``target`` (screening operating point)."""
    from sklearn.metrics import roc_curve

    y = _binary_labels(y_true)
    s = _scores_1d(scores, y.shape[0])
    if y.sum() == 0 or y.sum() == y.size:
        return 0.5
    _, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    ok = np.isfinite(thr) & (tpr >= target)
    return float(thr[ok][0]) if ok.any() else float(s.min())


# --------------------------------------------------------------------------- calibration


def _calibration_pairs(y_true: Any, probs: Any, task: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(confidence, correct/positive) pairs for reliability: binary positive-class,
    multiclass top-label, multilabel pooled over all labels."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if task is None:
        if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
            task = "binary"
        elif y.ndim == 2 and y.shape == p.shape and not np.all(y.sum(1) == 1):
            task = "multilabel"
        else:
            task = "multiclass"
    if task == "binary":
        yb = _binary_labels(y)
        pb = _positive_probs(p, yb.shape[0])
        return pb, yb.astype(np.float64), "positive-class"
    if task == "multiclass":
        yi, pm = _multiclass_inputs(y, p)
        top = pm.argmax(axis=1)
        return pm.max(axis=1), (top == yi).astype(np.float64), "top-label"
    if task == "multilabel":
        ym, pm = _multilabel_inputs(y, p)
        return pm.ravel(), ym.ravel().astype(np.float64), "pooled-labels"
    raise InputError(f"unknown task {task!r}; expected one of {TASKS}")


def calibration_bins(y_true: Any, probs: Any, n_bins: int = 10, task: str | None = None) -> dict[str, Any]:
    """Reliability table over ``n_bins`` equal-width confidence bins: each bin has lower, upper,
    mean_predicted, observed (fraction positive/correct) and count (empty bins: None values)."""
    conf, hit, kind = _calibration_pairs(y_true, probs, task)
    idx = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        c = int(count[b])
        bins.append({
            "lower": b / n_bins, "upper": (b + 1) / n_bins, "count": c,
            "mean_predicted": float(sum_conf[b] / c) if c else None,
            "observed": float(sum_hit[b] / c) if c else None,
        })
    return {"kind": kind, "n_bins": int(n_bins), "bins": bins}


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 10, task: str | None = None) -> float:
    """ECE = sum_b (n_b / N) |observed_b - mean_predicted_b| over equal-width bins.
    Binary: positive-class probability; multiclass: top-label confidence; multilabel: pooled."""
    table = calibration_bins(y_true, probs, n_bins=n_bins, task=task)
    n = sum(b["count"] for b in table["bins"])
    if n == 0:
        return float("nan")
    return float(sum(b["count"] * abs(b["observed"] - b["mean_predicted"]) for b in table["bins"] if b["count"]) / n)


def brier_score(y_true: Any, probs: Any, task: str | None = None) -> float:
    """Brier score. Binary: mean (p - y)^2 (0..1); multiclass: mean over cases of the squared
    distance to the one-hot label summed over classes (0..2); multilabel: mean over all entries."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if task is None:
        task = "binary" if (p.ndim == 1 or p.shape[1] == 1) else (
            "multilabel" if (y.ndim == 2 and not np.all(y.sum(1) == 1)) else "multiclass")
    if task == "binary":
        yb = _binary_labels(y)
        pb = _positive_probs(p, yb.shape[0])
        return float(np.mean((pb - yb) ** 2)) if yb.size else float("nan")
    if task == "multiclass":
        yi, pm = _multiclass_inputs(y, p)
        onehot = np.eye(pm.shape[1])[yi]
        return float(np.mean(np.sum((pm - onehot) ** 2, axis=1))) if yi.size else float("nan")
    ym, pm = _multilabel_inputs(y, p)
    return float(np.mean((pm - ym) ** 2)) if ym.size else float("nan")


# --------------------------------------------------------------------------- confusion / per class


def _positive_probs(p: np.ndarray, n: int) -> np.ndarray:
    """Binary P(class 1) from (N,), (N, 1) or (N, 2) probabilities."""
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    return _scores_1d(p, n)


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Counts (K, K): rows = true class, columns = predicted class."""
    yt = np.asarray(y_true, dtype=np.int64).ravel()
    yp = np.asarray(y_pred, dtype=np.int64).ravel()
    return np.bincount(yt * n_classes + yp, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _binary_counts_stats(tp: int, fp: int, tn: int, fn: int) -> dict[str, Any]:
    sens = _ratio(tp, tp + fn)
    ppv = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "n": int(tp + fn), "n_predicted": int(tp + fp), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "sensitivity": sens, "specificity": _ratio(tn, tn + fp), "ppv": ppv, "npv": _ratio(tn, tn + fn), "f1": f1,
    }


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


# --------------------------------------------------------------------------- the summary


def accuracy_argmax(y_true: Any, probs: Any, task: str = "binary") -> float:
    """MedMNIST's accuracy: the class of highest probability (binary: positive when p > 0.5, as argmax of
    [1 - p, p] picks the first class on a tie); multilabel: each label at 0.5, averaged over labels and cases."""
    p = np.asarray(probs, dtype=np.float64)
    if task == "binary":
        y = _binary_labels(y_true)
        p1 = _positive_probs(p, y.shape[0])
        return float(np.mean((p1 > 0.5).astype(np.int64) == y))
    if task == "multilabel":
        y = np.asarray(y_true, dtype=np.int64).reshape(p.shape)
        return float(np.mean((p > 0.5).astype(np.int64) == y))
    y = np.asarray(y_true, dtype=np.int64).ravel()
    return float(np.mean(np.argmax(p, axis=1) == y))


def classification_metrics(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    task: str = "binary",
    threshold: float | Sequence[float] = 0.5,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = 10,
) -> dict[str, Any]:
    """All classification figures as a JSON-ready dict (see module docstring for conventions).

    Keys: task, class_names, n, auc, auc_ci, accuracy (at `threshold`), accuracy_argmax (MedMNIST's definition),
    balanced_accuracy, threshold, per_class,
    confusion_matrix (+ confusion_matrix_rows/cols), ece, brier, calibration, average_precision,
    warnings, bootstrap info; binary adds sensitivity/specificity/ppv/npv/f1 of the positive class.
    Undefined values are None; degenerate data produce ``warnings`` entries, never a crash.
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {TASKS}")
    names = [str(c) for c in class_names]
    warn: list[str] = []
    probs_arr = np.asarray(probs, dtype=np.float64)
    if probs_arr.size and (probs_arr.min() < -1e-6 or probs_arr.max() > 1 + 1e-6):
        raise InputError("probabilities outside [0, 1] (logits? apply softmax/sigmoid first)")
    out: dict[str, Any] = {"task": task, "class_names": names}
    per_class: list[dict[str, Any]] = []

    if task == "binary":
        y = _binary_labels(y_true)
        if probs_arr.ndim == 2 and probs_arr.shape[1] > 2:
            raise InputError(f"binary task but probabilities have {probs_arr.shape[1]} columns")
        p1 = _positive_probs(probs_arr, y.shape[0])
        if len(names) != 2:
            raise InputError(f"binary task needs 2 class names, got {len(names)}: {names}")
        thr = float(np.ravel(threshold)[0])
        pred = (p1 >= thr).astype(np.int64)
        auc_metric, auc_scores = roc_auc, p1
        auc = roc_auc(y, p1)
        cm = confusion_matrix(y, pred, 2)
        n = int(y.shape[0])
        accuracy = _ratio(int(np.trace(cm)), n)
        ap1 = _average_precision(y, p1)
        for k in range(2):
            tp = int(cm[k, k]); fp = int(cm[:, k].sum() - tp); fn = int(cm[k, :].sum() - tp)
            st = _binary_counts_stats(tp, fp, n - tp - fp - fn, fn)
            st.update({"name": names[k], "index": k, "auc": auc,
                       "average_precision": ap1 if k == 1 else _average_precision(1 - y, 1 - p1)})
            per_class.append(st)
        pos = per_class[1]
        for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            out[key] = pos[key]
        out["positive_class"] = names[1]
        average_precision = ap1
        present = np.unique(y)
        cm_rows, cm_cols = names, names
        threshold_out: Any = thr
        ece = expected_calibration_error(y, p1, n_bins, task="binary")
        brier = brier_score(y, p1, task="binary")
        calib = calibration_bins(y, p1, n_bins, task="binary")
        balanced = float(np.nanmean([pos["sensitivity"], pos["specificity"]])) if n else float("nan")
    elif task == "multiclass":
        y, p = _multiclass_inputs(y_true, probs_arr)
        k_cls = p.shape[1]
        if len(names) != k_cls:
            raise InputError(f"{len(names)} class names for {k_cls} probability columns")
        if p.size and not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
            warn.append("multiclass probabilities do not sum to 1 per case (softmax not applied?)")
        pred = p.argmax(axis=1)
        auc_metric, auc_scores = macro_auc_ovr, p
        aucs = np.array([roc_auc((y == k).astype(np.int64), p[:, k]) for k in range(k_cls)])
        auc = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        cm = confusion_matrix(y, pred, k_cls)
        n = int(y.shape[0])
        accuracy = _ratio(int(np.trace(cm)), n)
        aps = []
        for k in range(k_cls):
            tp = int(cm[k, k]); fp = int(cm[:, k].sum() - tp); fn = int(cm[k, :].sum() - tp)
            st = _binary_counts_stats(tp, fp, n - tp - fp - fn, fn)
            ap = _average_precision((y == k).astype(np.int64), p[:, k])
            aps.append(ap)
            st.update({"name": names[k], "index": k, "auc": aucs[k], "average_precision": ap})
            per_class.append(st)
        absent = [names[k] for k in range(k_cls) if not np.any(y == k)]
        if absent and n:
            warn.append(f"classes absent from y_true (left out of the macro AUC): {absent}")
        average_precision = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
        present = np.unique(y)
        cm_rows, cm_cols = names, names
        threshold_out = None  # argmax decision
        ece = expected_calibration_error(y, p, n_bins, task="multiclass")
        brier = brier_score(y, p, task="multiclass")
        calib = calibration_bins(y, p, n_bins, task="multiclass")
        recalls = [c["sensitivity"] for c in per_class]
        balanced = float(np.nanmean(recalls)) if np.isfinite(recalls).any() else float("nan")
    else:  # multilabel
        y, p = _multilabel_inputs(y_true, probs_arr)
        k_lab = p.shape[1]
        if len(names) != k_lab:
            raise InputError(f"{len(names)} label names for {k_lab} probability columns")
        thr_arr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (k_lab,))
        pred = (p >= thr_arr[None, :]).astype(np.int64)
        auc_metric, auc_scores = multilabel_auc, p
        aucs = np.array([roc_auc(y[:, k], p[:, k]) for k in range(k_lab)])
        auc = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        n = int(y.shape[0])
        rows = []
        aps = []
        for k in range(k_lab):
            tp = int(np.sum((pred[:, k] == 1) & (y[:, k] == 1)))
            fp = int(np.sum((pred[:, k] == 1) & (y[:, k] == 0)))
            fn = int(np.sum((pred[:, k] == 0) & (y[:, k] == 1)))
            tn = n - tp - fp - fn
            rows.append([tn, fp, fn, tp])
            st = _binary_counts_stats(tp, fp, tn, fn)
            ap = _average_precision(y[:, k], p[:, k])
            aps.append(ap)
            st.update({"name": names[k], "index": k, "auc": aucs[k], "average_precision": ap,
                       "threshold": float(thr_arr[k])})
            per_class.append(st)
        constant = [names[k] for k in range(k_lab) if not np.isfinite(aucs[k])]
        if constant and n:
            warn.append(f"labels with a single class in y_true (AUC undefined, left out of the mean): {constant}")
        cm = np.asarray(rows, dtype=np.int64).reshape(k_lab, 4)
        cm_rows, cm_cols = names, ["TN", "FP", "FN", "TP"]
        # MedMNIST's multi-label ACC: mean over labels of per-label accuracy.
        accuracy = float(np.mean(pred == y)) if n else float("nan")
        out["subset_accuracy"] = float(np.mean(np.all(pred == y, axis=1))) if n else float("nan")
        average_precision = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
        present = None
        threshold_out = float(thr_arr[0]) if np.all(thr_arr == thr_arr[0]) else thr_arr.tolist()
        ece = expected_calibration_error(y, p, n_bins, task="multilabel")
        brier = brier_score(y, p, task="multilabel")
        calib = calibration_bins(y, p, n_bins, task="multilabel")
        bal = [np.nanmean([c["sensitivity"], c["specificity"]]) for c in per_class
               if np.isfinite([c["sensitivity"], c["specificity"]]).any()]
        balanced = float(np.mean(bal)) if bal else float("nan")

    if n == 0:
        warn.append("no cases: all metrics undefined")
    elif present is not None and len(present) < 2:
        warn.append(f"only one class present in y_true ({names[int(present[0])]}): AUC undefined")
    elif not math.isfinite(auc):
        warn.append("AUC undefined for every class/label")

    n_groups = int(len(np.unique(np.asarray(groups)))) if groups is not None else None
    auc_ci: list[Any]
    one_group = n_groups == 1  # resampling one patient draws the same cases each time: a 0-width CI, so none
    if math.isfinite(auc) and n_boot > 0 and one_group:
        warn.append(f"all {n} cases come from one patient/source: no confidence interval across patients, and "
                    "the AUC says little about other patients")
    if math.isfinite(auc) and n_boot > 0 and not one_group:
        if n_groups is not None and n_groups < MIN_CI_GROUPS:
            warn.append(f"the cases come from only {n_groups} patients/sources: the confidence interval, resampled "
                        "over them, is rough")
        values, skipped = bootstrap_values(auc_metric, y, auc_scores,
                                           n_boot=n_boot, seed=seed, groups=groups)
        if values.size:
            lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
            auc_ci = [float(lo), float(hi)]
        else:
            auc_ci = [None, None]
            warn.append("no usable bootstrap resample: AUC confidence interval undefined")
        if skipped > 0.1 * n_boot:
            warn.append(f"{skipped} of {n_boot} bootstrap resamples skipped (a class was absent); "
                        "the CI is unreliable with so few cases of a class")
    else:
        auc_ci, skipped = [None, None], 0

    out.update({
        "n": n,
        "auc": auc,
        "auc_ci": auc_ci,
        "ci_level": 1.0 - alpha,
        "bootstrap": {"n_boot": int(n_boot), "n_skipped": int(skipped), "seed": int(seed),
                      "method": "percentile", "unit": "group" if groups is not None else "case",
                      "n_groups": n_groups},
        "accuracy": accuracy,
        "accuracy_argmax": accuracy_argmax(y_true, probs_arr, task) if n else None,
        "balanced_accuracy": balanced,
        "average_precision": average_precision,
        "threshold": threshold_out,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_rows": list(cm_rows),
        "confusion_matrix_cols": list(cm_cols),
        "ece": ece,
        "brier": brier,
        "calibration": calib,
        "warnings": warn,
    })
    return _nan_to_none(out)
