"""How sure, with a guarantee: temperature scaling and split-conformal prediction sets, fitted on validation.

Temperature scaling divides the logits by one number T (fitted by minimising the validation negative
log-likelihood), which changes how confident the probabilities are but never their ranking. Split conformal
prediction (LAC: score 1 - p(true class); APS: cumulative mass of the classes ranked above and including the true
one) takes the finite-sample-corrected (1 - alpha) quantile of the validation scores; on exchangeable new cases the
set {classes whose score <= quantile} then holds the true class with probability >= 1 - alpha (Vovk et al. 2005;
Angelopoulos & Bates 2021). Pure numpy/scipy, so every layer above may use it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

METHODS = ("lac", "aps")
_EPS = 1e-12


def probs_to_logits(probs: np.ndarray, task: str) -> np.ndarray:
    """Logits that give `probs` back (binary: the positive-class log-odds, (N, 1); multiclass: log p, (N, K))."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    if task == "binary":
        p1 = p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p.reshape(-1)
        return np.log(p1 / (1 - p1)).reshape(-1, 1)
    if task == "multilabel":
        return np.log(p / (1 - p))
    return np.log(p)


def scaled_probs(logits: np.ndarray, temperature: float, task: str) -> np.ndarray:
    """(N, K) probabilities of logits / T (binary gives [1 - p, p]), through the model outputs' own mapping."""
    from meddx.models.outputs import logits_to_probs

    return logits_to_probs(np.asarray(logits, dtype=np.float64) / float(temperature), task)


def calibrate_probs(probs: np.ndarray, temperature: float | None, task: str) -> np.ndarray:
    """Temperature-scaled probabilities from (uncalibrated) probabilities; unchanged when T is None or 1."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature is None or abs(float(temperature) - 1.0) < 1e-12:
        return probs
    return scaled_probs(probs_to_logits(probs, task), float(temperature), task)


def _nll(logits: np.ndarray, y: np.ndarray, t: float, task: str) -> float:
    p = np.clip(scaled_probs(logits, t, task), _EPS, 1.0)
    if task == "multilabel":
        yy = y.astype(np.float64)
        return float(-np.mean(yy * np.log(p) + (1 - yy) * np.log(np.clip(1 - p, _EPS, 1.0))))
    return float(-np.mean(np.log(p[np.arange(len(y)), y.reshape(-1).astype(int)])))


def fit_temperature(logits: np.ndarray, y: np.ndarray, task: str, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the negative log-likelihood of `logits / T` on labelled (validation) cases."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: _nll(logits, y, math.exp(lt), task),
                          bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    t = float(math.exp(res.x))
    return t if _nll(logits, y, t, task) <= _nll(logits, y, 1.0, task) else 1.0


def _scores(probs: np.ndarray, method: str) -> np.ndarray:
    """(N, K) non-conformity score of every class for every case (lower = more conforming)."""
    p = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        return 1.0 - p
    if method == "aps":
        order = np.argsort(-p, axis=1, kind="stable")
        cum = np.take_along_axis(p, order, axis=1).cumsum(axis=1)
        out = np.empty_like(p)
        np.put_along_axis(out, order, cum, axis=1)
        return out
    raise ValueError(f"conformal method must be one of {METHODS}, got {method!r}")


def conformal_quantile(probs: np.ndarray, y: np.ndarray, coverage: float = 0.9, method: str = "lac") -> float:
    """The split-conformal threshold on the scores of the true classes of labelled (calibration) cases:
    the ceil((n + 1) * coverage) / n empirical quantile (inf when n is too small for the coverage asked)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    y = np.asarray(y).reshape(-1).astype(int)
    n = len(y)
    if n == 0:
        return float("inf")
    s = _scores(probs, method)[np.arange(n), y]
    k = math.ceil((n + 1) * coverage)
    if k > n:
        return float("inf")
    return float(np.sort(s)[k - 1])


def prediction_sets(probs: np.ndarray, qhat: float, method: str = "lac") -> np.ndarray:
    """(N, K) boolean membership of each class in each case's prediction set; never empty (the most probable
    class is always in, as an empty set would say nothing)."""
    p = np.asarray(probs, dtype=np.float64)
    members = _scores(p, method) <= qhat + 1e-12
    members[np.arange(len(p)), p.argmax(axis=1)] = True
    return members


def set_names(members: Sequence[bool], class_names: Sequence[str]) -> list[str]:
    """The class names in one prediction set."""
    return [c for c, m in zip(class_names, members) if m]


def set_metrics(members: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Empirical coverage (true class in the set), mean set size and share of single-class sets."""
    y = np.asarray(y).reshape(-1).astype(int)
    if len(y) == 0:
        return {"coverage": None, "mean_set_size": None, "singleton_rate": None, "n": 0}
    sizes = members.sum(axis=1)
    return {"coverage": float(members[np.arange(len(y)), y].mean()), "mean_set_size": float(sizes.mean()),
            "singleton_rate": float((sizes == 1).mean()), "n": int(len(y))}


def describe_set(names: Sequence[str]) -> str:
    """Plain words for a prediction set, for reports."""
    if len(names) == 1:
        return f"{names[0]}: the only class compatible with this image at the stated coverage"
    return f"{' or '.join(names)}: the model cannot separate these here"
