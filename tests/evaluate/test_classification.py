"""Classification metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from meddx.errors import InputError
from meddx.evaluate import classification as C


def _binary(n=400, seed=0, signal=0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1)
    return y, np.round(p, 2)  # rounding creates ties


def test_roc_auc_matches_sklearn_with_ties():
    y, p = _binary()
    assert C.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_roc_auc_hand_computed():
    # pairs (pos, neg): 3 positives x 2 negatives = 6; pos 0.8 beats both, 0.4 ties 0.4 (1/2)
    # and beats 0.1, 0.05 beats none -> (2 + 1.5 + 0) / 6
    y = [1, 1, 1, 0, 0]
    s = [0.8, 0.4, 0.05, 0.4, 0.1]
    assert C.roc_auc(y, s) == pytest.approx(3.5 / 6)
    assert np.isnan(C.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_macro_auc_ovr_matches_sklearn_and_medmnist_definition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    p = rng.dirichlet(np.ones(4), 300)
    p[np.arange(300), y] += 0.3
    p /= p.sum(1, keepdims=True)
    expected = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert C.macro_auc_ovr(y, p) == pytest.approx(expected, abs=1e-12)
    manual = np.mean([roc_auc_score(y == k, p[:, k]) for k in range(4)])
    assert C.macro_auc_ovr(y, p) == pytest.approx(manual, abs=1e-12)


def test_multilabel_auc_is_mean_over_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (200, 3))
    p = np.clip(0.4 * y + 0.6 * rng.random((200, 3)), 0, 1)
    assert C.multilabel_auc(y, p) == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-12)
    y[:, 2] = 0  # constant label -> left out
    expected = np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(2)])
    assert C.multilabel_auc(y, p) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    y, p = _binary()
    auc = C.roc_auc(y, p)
    lo, hi = C.bootstrap_ci(C.roc_auc, y, p, n_boot=500, seed=3)
    assert lo < auc < hi
    assert 0.02 < hi - lo < 0.25
    assert (lo, hi) == C.bootstrap_ci(C.roc_auc, y, p, n_boot=500, seed=3)
    assert (lo, hi) != C.bootstrap_ci(C.roc_auc, y, p, n_boot=500, seed=4)


@pytest.mark.parametrize("metric", ["binary", "multiclass", "multilabel"])
def test_fast_auc_bootstrap_equals_generic_path(metric):
    rng = np.random.default_rng(5)
    if metric == "binary":
        y, p, f = *_binary(150), C.roc_auc
    elif metric == "multiclass":
        y = rng.integers(0, 3, 150)
        p, f = np.round(rng.dirichlet(np.ones(3), 150), 1), C.macro_auc_ovr
    else:
        y = rng.integers(0, 2, (150, 3))
        p, f = np.round(rng.random((150, 3)), 1), C.multilabel_auc
    fast = C.bootstrap_values(f, y, p, n_boot=100, seed=1)
    slow = C.bootstrap_values(lambda a, b: f(a, b), y, p, n_boot=100, seed=1)  # wrapper: no fast path
    assert fast[1] == slow[1]
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12)


def test_bootstrap_skips_resamples_missing_a_class():
    y = np.array([1] + [0] * 29)
    p = np.linspace(0, 1, 30)
    values, skipped = C.bootstrap_values(C.roc_auc, y, p, n_boot=200, seed=0)
    # P(the single positive is not drawn) = (29/30)^30 ~ 0.36
    assert 40 < skipped < 110
    assert values.size == 200 - skipped


def test_group_bootstrap_resamples_whole_groups():
    # 40 patients x 5 near-identical slices: case resampling pretends there are 200 independent
    # cases and gives a too-narrow CI; group resampling keeps patients together.
    rng = np.random.default_rng(7)
    patient_y = rng.integers(0, 2, 40)
    patient_s = np.clip(0.25 * patient_y + 0.75 * rng.random(40), 0, 1)
    y = np.repeat(patient_y, 5)
    s = np.repeat(patient_s, 5) + rng.normal(0, 1e-4, 200)
    groups = np.repeat(np.arange(40), 5)
    lo_c, hi_c = C.bootstrap_ci(C.roc_auc, y, s, n_boot=400, seed=0)
    lo_g, hi_g = C.bootstrap_ci(C.roc_auc, y, s, n_boot=400, seed=0, groups=groups)
    assert (hi_g - lo_g) > 1.5 * (hi_c - lo_c)

    seen = []

    def spy(yy, ss):
        seen.append(ss.copy())
        return C.roc_auc(yy, ss)

    C.bootstrap_values(spy, y, s, n_boot=20, seed=0, groups=groups)
    members = {round(v, 12): g for v, g in zip(s, groups)}
    for sample in seen:
        counts = np.bincount([members[round(v, 12)] for v in sample], minlength=40)
        # each drawn patient appears with all 5 slices (a multiple of 5), 40 patients' worth in all
        assert np.all(counts % 5 == 0) and counts.sum() == 200


def test_one_patient_gives_no_interval_and_few_patients_a_warning():
    # resampling whole patients when there is one patient draws the same cases every time: a 0-width "CI"
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 15)
    p1 = np.clip(0.3 * y + 0.7 * rng.random(30), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    one = C.classification_metrics(y, probs, ["a", "b"], groups=np.zeros(30), n_boot=200)
    assert one["auc"] > 0.5 and one["auc_ci"] == [None, None]
    assert any("one patient/source" in w for w in one["warnings"])
    few = C.classification_metrics(y, probs, ["a", "b"], groups=np.arange(30) % 3, n_boot=200)
    lo, hi = few["auc_ci"]
    assert lo < hi and any("only 3 patients/sources" in w for w in few["warnings"])
    many = C.classification_metrics(y, probs, ["a", "b"], groups=np.arange(30), n_boot=200)
    assert not any("patients/sources" in w for w in many["warnings"])


def test_youden_and_operating_point_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # t=0.7: sens 3/4, spec 4/4 -> J=0.75; t=0.4: sens 1, spec 3/4 -> J=0.75 (tie: higher t wins); returned as
    # the midpoint between the cut 0.7 and the next lower score 0.6 (see test_youden_threshold_is_a_midpoint)
    assert C.youden_threshold(y, s) == pytest.approx(0.65)
    m = C.classification_metrics(y, s, ["benign", "malignant"], threshold=0.4, n_boot=50)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.75
    assert m["confusion_matrix"] == [[3, 1], [0, 4]]
    assert m["ppv"] == pytest.approx(0.8) and m["npv"] == 1.0
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1))
    assert m["accuracy"] == pytest.approx(7 / 8) and m["balanced_accuracy"] == pytest.approx(0.875)
    pos = m["per_class"][1]
    assert pos["name"] == "malignant" and pos["n"] == 4 and pos["tp"] == 4 and pos["fp"] == 1
    neg = m["per_class"][0]
    assert neg["sensitivity"] == 0.75 and neg["specificity"] == 1.0 and neg["n"] == 4
    assert m["threshold"] == 0.4
    # the same scores as (N, 2) probabilities give the same figures
    m2 = C.classification_metrics(y, np.stack([1 - s, s], 1), ["benign", "malignant"], threshold=0.4, n_boot=50)
    assert m2["auc"] == m["auc"] and m2["confusion_matrix"] == m["confusion_matrix"]


def test_youden_threshold_is_a_midpoint():
    """The threshold lies halfway between the J-maximising case's score and the next lower distinct score, so a
    validation case's score moving by a rounding error does not flip its class; decisions equal the cut's."""
    y = np.array([0, 0, 0, 1, 0, 1, 1])
    s = np.array([0.10, 0.20, 0.20, 0.55, 0.30, 0.80, 0.55])
    t = C.youden_threshold(y, s)
    assert t == pytest.approx((0.55 + 0.30) / 2)  # cut at 0.55 (J = 1); next lower distinct score 0.30
    np.testing.assert_array_equal(s >= t, s >= 0.55)
    assert (s - 1e-7 >= t).tolist() == (s >= t).tolist()  # a case scored a hair lower keeps its class
    # the cut is the lowest score (calling every case positive is best): nothing lower, the cut itself
    assert C.youden_threshold(np.array([1, 0]), np.array([0.2, 0.9])) == 0.2
    # adjacent floats: no midpoint between them, the cut itself (never the lower case's score)
    lo = 0.5
    hi = float(np.nextafter(lo, 1.0))
    assert C.youden_threshold(np.array([0, 1]), np.array([lo, hi])) == hi


def test_classification_metrics_schema_and_json():
    y, p = _binary(300)
    m = C.classification_metrics(y, p, ["normal", "pneumonia"], n_boot=200, seed=1)
    required = {"auc", "auc_ci", "accuracy", "n", "threshold", "task", "class_names", "per_class",
                "confusion_matrix", "balanced_accuracy", "ece", "brier", "calibration", "warnings"}
    assert required <= set(m)
    assert m["n"] == 300 and m["task"] == "binary" and m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auc_ci"][0] < m["auc"] < m["auc_ci"][1]
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert {"name", "n", "sensitivity", "specificity", "ppv", "npv", "f1", "auc"} <= set(m["per_class"][0])
    assert sum(b["count"] for b in m["calibration"]["bins"]) == 300
    json.dumps(m, allow_nan=False)  # strictly valid JSON: no NaN


def test_multiclass_and_multilabel_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200)
    m = C.classification_metrics(y, p, ["a", "b", "c"], task="multiclass", n_boot=100)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    assert m["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert np.array(m["confusion_matrix"]).sum() == 200 and m["threshold"] is None
    assert [c["n"] for c in m["per_class"]] == np.bincount(y, minlength=3).tolist()
    onehot = np.eye(3)[y]
    assert m["brier"] == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)))

    yl = rng.integers(0, 2, (100, 4))
    pl = rng.random((100, 4))
    ml = C.classification_metrics(yl, pl, list("wxyz"), task="multilabel", n_boot=100)
    assert ml["auc"] == pytest.approx(roc_auc_score(yl, pl))
    assert ml["accuracy"] == pytest.approx(np.mean((pl >= 0.5) == yl))  # MedMNIST label-wise ACC
    assert ml["confusion_matrix_cols"] == ["TN", "FP", "FN", "TP"]
    assert np.array(ml["confusion_matrix"]).sum(1).tolist() == [100] * 4
    json.dumps(ml, allow_nan=False)

    unnormalised = C.classification_metrics(y, p * 0.5, ["a", "b", "c"], task="multiclass", n_boot=0)
    assert any("sum to 1" in w for w in unnormalised["warnings"]) and unnormalised["auc_ci"] == [None, None]


def test_degenerate_single_class_gives_none_and_warning():
    m = C.classification_metrics(np.zeros(10, int), np.linspace(0, 1, 10), ["a", "b"], n_boot=50)
    assert m["auc"] is None and m["auc_ci"] == [None, None]
    assert any("one class" in w for w in m["warnings"])
    assert m["sensitivity"] is None and m["specificity"] == 0.5
    json.dumps(m, allow_nan=False)
    empty = C.classification_metrics(np.zeros(0, int), np.zeros(0), ["a", "b"], n_boot=10)
    assert empty["n"] == 0 and empty["auc"] is None


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        C.classification_metrics([0, 1, 2], [0.1, 0.2, 0.3], ["a", "b"])
    with pytest.raises(InputError):
        C.classification_metrics([0, 1], [-3.0, 2.0], ["a", "b"])  # logits
    with pytest.raises(InputError):
        C.classification_metrics([0, 1], [0.2, 0.3, 0.4], ["a", "b"])


def test_ece_near_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)
    assert C.expected_calibration_error(y, p) < 0.01
    assert C.expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.15
    # hand example: one bin [0.8, 0.9) with 4 cases at 0.8, 3 correct -> |0.75 - 0.8| = 0.05
    assert C.expected_calibration_error([1, 1, 1, 0], [0.8] * 4) == pytest.approx(0.05)


def test_top_label_ece_multiclass():
    # confidences 0.6 with 60% accuracy -> calibrated; 0.9 with 60% accuracy -> 0.3
    y = np.array([0, 0, 0, 1, 1] * 20)
    p_good = np.tile([0.6, 0.3, 0.1], (100, 1))
    assert C.expected_calibration_error(y, p_good, task="multiclass") == pytest.approx(0.0, abs=1e-12)
    p_bad = np.tile([0.9, 0.05, 0.05], (100, 1))
    assert C.expected_calibration_error(y, p_bad, task="multiclass") == pytest.approx(0.3)


def test_curve_helpers():
    y, p = _binary(100)
    roc = C.roc_points(y, p)
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    from sklearn.metrics import auc

    assert auc(roc["fpr"], roc["tpr"]) == pytest.approx(C.roc_auc(y, p))
    pr = C.pr_points(y, p)
    assert 0 < pr["average_precision"] <= 1 and pr["prevalence"] == pytest.approx(y.mean())


def test_accuracy_argmax_known_answers() -> None:
    """MedMNIST's accuracy: argmax of the probabilities, independent of the operating threshold."""
    from meddx.evaluate.classification import accuracy_argmax, classification_metrics

    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.2, 0.6, 0.55, 0.9, 0.4])  # argmax right on 0.2, 0.55, 0.9 -> 3/5
    assert accuracy_argmax(y, p1, "binary") == pytest.approx(0.6)
    assert accuracy_argmax(y, np.stack([1 - p1, p1], 1), "binary") == pytest.approx(0.6)
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["a", "b"], threshold=0.95, n_boot=10)
    assert m["accuracy_argmax"] == pytest.approx(0.6)
    assert m["accuracy"] == pytest.approx(0.4)  # at 0.95 only the two negatives are right
    pm = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25]])
    assert accuracy_argmax([0, 2, 2, 0], pm, "multiclass") == pytest.approx(0.75)
    assert accuracy_argmax([[1, 0], [0, 1]], [[0.9, 0.4], [0.6, 0.7]], "multilabel") == pytest.approx(0.75)


def test_robust_threshold_follows_data_when_large_and_prior_when_small() -> None:
    """Many validation cases per class: close to Youden's cut; a dozen: pulled toward 0.5."""
    from meddx.evaluate.classification import robust_threshold, youden_threshold

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(2000, int), np.ones(2000, int)]
    s = np.r_[rng.normal(0.75, 0.05, 2000), rng.normal(0.95, 0.05, 2000)].clip(0, 1)
    big = robust_threshold(y, s)
    assert abs(big - youden_threshold(y, s)) < 0.03 and big > 0.8
    small = robust_threshold(y[1990:2010], s[1990:2010])
    assert 0.5 < small < big - 0.1
    assert robust_threshold(y[1990:2010], s[1990:2010], prior=None) > 0.75
    assert robust_threshold(np.ones(5, int), np.linspace(0, 1, 5)) == 0.5
