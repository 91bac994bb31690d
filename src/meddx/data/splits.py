"""Patient-level stratified splits and k-fold: no patient is ever in two splits."""

from __future__ import annotations

import numpy as np

from meddx.data.datasets import Dataset
from meddx.errors import DataError


def _strata(ds: Dataset) -> np.ndarray:
    """A single stratification label per case (multilabel: the first positive label)."""
    if ds.task == "multilabel":
        lab = np.asarray(ds.labels)
        return np.where(lab.any(axis=1), lab.argmax(axis=1) + 1, 0)
    return np.asarray(ds.labels).astype(int)


def _groups(ds: Dataset) -> np.ndarray:
    if ds.patient_ids is not None:
        return np.asarray(ds.patient_ids)
    return np.arange(len(ds)).astype(str)


def _holdout(strata: np.ndarray, groups: np.ndarray, candidates: np.ndarray, fraction: float,
             seed: int) -> np.ndarray:
    """Indices (subset of `candidates`) holding about `fraction` of the cases, whole groups only."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups[candidates]))
    n_splits = int(round(1.0 / fraction))
    n_splits = max(2, min(n_splits, n_groups))
    y = strata[candidates]
    # StratifiedGroupKFold needs a class with at least n_splits cases (small DATA: fewer folds, so a larger part)
    n_splits = max(2, min(n_splits, int(np.unique(y, return_counts=True)[1].max())))
    # StratifiedGroupKFold needs each class to appear; fall back to group-only folds otherwise.
    if len(np.unique(y)) < 2:
        from sklearn.model_selection import GroupKFold
        splitter = GroupKFold(n_splits=n_splits)
        folds = list(splitter.split(candidates, y, groups[candidates]))
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = list(splitter.split(candidates, y, groups[candidates]))
    _, held = folds[0]
    return candidates[held]


def assign_splits(ds: Dataset, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Split name per case. Source-given splits are kept; missing ones are drawn by patient.

    npz files keep exactly the splits they contain (a missing test split stays missing,
    as MedMNIST trainval files intend). Folders and manifests without a `split` column get
    stratified, patient-grouped train/val/test splits; `groups` (one per case, e.g.
    `meddx.data.integrity.content_groups`, which also joins identical copies) replaces the patient grouping.
    """
    n = len(ds)
    out = np.asarray(ds.splits if ds.splits is not None else np.full(n, ""), dtype=object).astype("<U8")
    if ds.kind == "npz":
        return out
    strata, groups = _strata(ds), (_groups(ds) if groups is None else np.asarray(groups))
    _check_groups_consistent(out, _groups(ds))  # patients; copies across given splits are refused later by name
    unassigned = np.flatnonzero(out == "")
    if len(unassigned) == 0:
        return out
    have_test = bool(np.any(out == "test"))
    have_val = bool(np.any(out == "val"))
    remaining = unassigned
    if not have_test and test_fraction > 0:
        test_idx = _holdout(strata, groups, remaining, test_fraction, seed)
        out[test_idx] = "test"
        remaining = np.setdiff1d(remaining, test_idx)
    if not have_val and val_fraction > 0 and len(remaining):
        frac = val_fraction / max(1e-9, 1.0 - (test_fraction if not have_test else 0.0))
        val_idx = _holdout(strata, groups, remaining, min(frac, 0.5), seed + 1)
        out[val_idx] = "val"
        remaining = np.setdiff1d(remaining, val_idx)
    out[remaining] = "train"
    if not np.any(out == "train"):
        raise DataError("too few cases to make a training split", ds.source)
    return out


def _check_groups_consistent(splits: np.ndarray, groups: np.ndarray) -> None:
    """A patient given two different splits in a manifest is an error, not something to hide."""
    seen: dict[str, str] = {}
    for s, g in zip(splits, groups):
        if s == "":
            continue
        if seen.setdefault(g, s) != s:
            raise DataError(f"patient {g!r} appears in both the '{seen[g]}' and '{s}' splits")


def kfold_splits(ds: Dataset, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_index, test_index) pairs, stratified by label and grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _groups(ds)
    if len(set(groups)) < k:
        raise DataError(f"{k}-fold needs at least {k} patients, found {len(set(groups))}", ds.source)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    idx = np.arange(len(ds))
    return [(tr, te) for tr, te in splitter.split(idx, _strata(ds), groups)]
