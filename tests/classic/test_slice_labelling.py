"""Slice labelling: HMM / CRF smoothing of noisy per-frame probabilities, lesion runs and extent."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.classic.slice_labelling import (
    CRFSmoother, HMMSmoother, frame_features, lesion_extent, lesion_runs, sequence_f1, slice_feature_matrix,
)


def _noisy_sequences(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label sequences with one contiguous run; probabilities = label signal + heavy independent noise."""
    rng = np.random.default_rng(seed)
    probs, labels = [], []
    for _ in range(n):
        t = int(rng.integers(15, 30))
        y = np.zeros(t, np.int64)
        if rng.random() < 0.8:
            a = int(rng.integers(0, t - 4))
            y[a:a + int(rng.integers(3, min(12, t - a) + 1))] = 1
        z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.3, t)
        probs.append(1 / (1 + np.exp(-z)))
        labels.append(y)
    return probs, labels


def test_lesion_runs_and_extent() -> None:
    y = [0, 1, 1, 0, 0, 1, 1, 1, 0]
    assert lesion_runs(y) == [(1, 3), (5, 8)]
    assert lesion_runs([1, 1]) == [(0, 2)] and lesion_runs([0, 0]) == []
    ext = lesion_extent(y, numbers=np.arange(9) + 10)
    assert ext["first"] == 1 and ext["last"] == 7 and ext["n_positive"] == 5
    assert ext["longest_run"] == (5, 8) and ext["runs_numbers"] == [(11, 12), (15, 17)]
    assert lesion_extent([0, 0])["first"] is None


def test_sequence_f1() -> None:
    assert sequence_f1([[1, 1, 0]], [[1, 0, 0]]) == pytest.approx(2 / 3)
    assert sequence_f1([[0, 0]], [[0, 0]]) == 1.0


@pytest.mark.parametrize("emission", ["posterior", "gaussian"])
def test_hmm_improves_f1_over_thresholding(emission: str) -> None:
    ptr, ytr = _noisy_sequences(60, seed=0)
    pte, yte = _noisy_sequences(40, seed=1)
    raw = sequence_f1(yte, [(p >= 0.5).astype(int) for p in pte])
    hmm = HMMSmoother(emission=emission).fit(ptr, ytr)
    pred = hmm.predict(pte)
    assert [len(p) for p in pred] == [len(p) for p in pte]
    smooth = sequence_f1(yte, pred)
    assert smooth > raw + 0.05, (raw, smooth)
    post = hmm.predict_proba(pte)
    assert all(np.all((q >= 0) & (q <= 1)) for q in post)
    # transitions learned from the labels: staying is far more likely than switching
    assert hmm.hmm_.transmat_[0, 0] > 0.8 and hmm.hmm_.transmat_[1, 1] > 0.6


def test_hmm_unsupervised_fit_runs() -> None:
    ptr, _ = _noisy_sequences(30, seed=2)
    hmm = HMMSmoother().fit(ptr)
    assert hmm.hmm_.means_[1, 0] > hmm.hmm_.means_[0, 0]
    assert len(hmm.predict(ptr[:2])[0]) == len(ptr[0])


def test_crf_improves_f1_over_thresholding() -> None:
    ptr, ytr = _noisy_sequences(60, seed=0)
    pte, yte = _noisy_sequences(40, seed=1)
    raw = sequence_f1(yte, [(p >= 0.5).astype(int) for p in pte])
    crf = CRFSmoother().fit(ptr, ytr)
    smooth = sequence_f1(yte, crf.predict(pte))
    assert smooth > raw + 0.05, (raw, smooth)
    marg = crf.predict_proba(pte[:3])
    assert [len(m) for m in marg] == [len(p) for p in pte[:3]]


def test_input_checks_and_features() -> None:
    with pytest.raises(RuntimeError):
        HMMSmoother().predict([np.array([0.2, 0.8])])
    with pytest.raises(ValueError):
        HMMSmoother().fit([np.array([0.2, 0.8])], [np.array([0, 1, 1])])
    with pytest.raises(ValueError):
        CRFSmoother().fit([np.array([0.2, 0.8])], [np.array([0, 2])])
    f = frame_features([0.1, 0.9, 0.2], context=1)
    assert len(f) == 3 and f[1]["p[-1]"] == 0.1 and f[1]["p[+1]"] == 0.2 and f[0]["p[-1]"] == 0.0
    fm = slice_feature_matrix(np.random.default_rng(0).random((4, 16, 16, 3)))
    assert fm.shape[0] == 4 and np.isfinite(fm).all()
