"""Slice labelling: HMM / CRF smoothing of noisy per-frame probabilities, lesion runs and extent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.classic.slice_labelling import (
    CRFSmoother, HMMSmoother, PixelLesionScorer, frame_features, lesion_extent, lesion_pixel_features, lesion_runs,
    out_of_fold_slice_features, sequence_f1, slice_feature_matrix,
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


def test_crf_prior_threshold_without_position_features() -> None:
    """Balanced decision rule (marginal >= training lesion rate), no position features: still beats thresholding."""
    ptr, ytr = _noisy_sequences(60, seed=0)
    pte, yte = _noisy_sequences(40, seed=1)
    raw = sequence_f1(yte, [(p >= 0.5).astype(int) for p in pte])
    crf = CRFSmoother(c1=0.1, c2=0.1, threshold="prior", position=False).fit(ptr, ytr)
    assert crf.threshold_ == pytest.approx(np.concatenate(ytr).mean())
    assert sequence_f1(yte, crf.predict(pte)) > raw + 0.05
    assert "pos" not in frame_features([0.1, 0.9], position=False)[0] and "pos" in frame_features([0.1, 0.9])[0]
    with pytest.raises(ValueError):
        CRFSmoother(threshold="median")


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


def test_pixel_features_and_scorer_shapes() -> None:
    rng = np.random.default_rng(0)
    stacks = [rng.random((5, 16, 16, 3)).astype("float32") for _ in range(3)]
    masks = [np.zeros((5, 16, 16), bool) for _ in range(3)]
    for m in masks:
        m[2:4, 5:9, 5:9] = True
    feats, brain = lesion_pixel_features(stacks[0])
    assert feats.shape[:3] == (5, 16, 16) and brain.shape == (5, 16, 16) and np.isfinite(feats).all()
    with pytest.raises(RuntimeError):
        PixelLesionScorer().slice_features(stacks[:1])
    with pytest.raises(ValueError):
        PixelLesionScorer().fit(stacks[:1], [np.zeros((5, 16, 16), bool)])  # no lesion pixel at all
    oof = out_of_fold_slice_features(stacks, masks, n_splits=3, max_pixels_per_class=50, max_iter=5)
    assert [f.shape for f in oof] == [(5, 6)] * 3
    assert np.allclose([f[:, 3:].max(axis=0) for f in oof], 0.0)  # stack-relative columns peak at 0


def test_pixel_scorer_finds_lesion_slices_of_held_out_lgg_patients(shared_data: Path) -> None:
    """Trained on 5 patients' masks, its per-slice peak ranks the other patients' lesion slices (AUC > 0.8);
    control: the same scorer trained on masks shuffled between patients is much worse."""
    from sklearn.metrics import roc_auc_score

    from meddx.data.sequences import load_lgg_sequences

    root = shared_data / "lgg"
    if not root.is_dir():
        pytest.skip(f"real data {root} is absent")
    lgg = load_lgg_sequences(root, size=32)
    fr, ms, ys = lgg["frames"], lgg["masks"], lgg["labels"]
    kw = {"max_pixels_per_class": 500, "max_iter": 30}
    scorer = PixelLesionScorer(**kw).fit(fr[:5], ms[:5])
    y = np.concatenate(ys[5:])
    auc = roc_auc_score(y, np.concatenate([f[:, 0] for f in scorer.slice_features(fr[5:])]))
    assert auc > 0.8, auc
    shuffled = [ms[i][np.random.default_rng(i).permutation(len(ms[i]))] for i in range(5)]
    control = PixelLesionScorer(**kw).fit(fr[:5], shuffled)
    auc_c = roc_auc_score(y, np.concatenate([f[:, 0] for f in control.slice_features(fr[5:])]))
    assert auc_c < auc - 0.1, (auc, auc_c)
