"""Temperature scaling and split-conformal sets, on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.evaluate.conformal import (calibrate_probs, conformal_quantile, describe_set, fit_temperature,
                                      prediction_sets, scaled_probs, set_metrics, set_names)


def _cases(n: int, k: int, seed: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) with labels drawn from softmax(true logits); the returned logits are `sharpen` x true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = scaled_probs(z, 1.0, "multiclass")
    y = np.array([rng.choice(k, p=row) for row in p])
    return z * sharpen, y


@pytest.mark.parametrize("true_t", [0.5, 3.0])
def test_temperature_recovers_the_overconfidence(true_t: float) -> None:
    logits, y = _cases(4000, 4, 0, sharpen=true_t)
    assert fit_temperature(logits, y, "multiclass") == pytest.approx(true_t, rel=0.15)


def test_temperature_binary_and_already_calibrated() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(z.reshape(-1, 1) * 2.5, y, "binary") == pytest.approx(2.5, rel=0.15)
    assert fit_temperature(z.reshape(-1, 1), y, "binary") == pytest.approx(1.0, abs=0.15)


def test_calibrate_probs_equals_scaling_the_logits() -> None:
    logits, _ = _cases(50, 3, 2)
    probs = scaled_probs(logits, 1.0, "multiclass")
    np.testing.assert_allclose(calibrate_probs(probs, 2.0, "multiclass"), scaled_probs(logits, 2.0, "multiclass"),
                               atol=1e-9)
    b = np.array([[0.2], [-1.0], [3.0]])
    np.testing.assert_allclose(calibrate_probs(scaled_probs(b, 1.0, "binary"), 0.5, "binary"),
                               scaled_probs(b, 0.5, "binary"), atol=1e-9)
    assert calibrate_probs(probs, None, "multiclass") is not None


@pytest.mark.parametrize("method", ["lac", "aps"])
@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_split_conformal_coverage_holds_on_new_cases(method: str, coverage: float) -> None:
    logits, y = _cases(6000, 5, 3)
    probs = scaled_probs(logits, 1.0, "multiclass")
    cal, test = slice(0, 1000), slice(1000, None)
    q = conformal_quantile(probs[cal], y[cal], coverage, method)
    m = set_metrics(prediction_sets(probs[test], q, method), y[test])
    slack = 0.04 if method == "lac" else 0.1  # APS without randomisation over-covers (includes the boundary class)
    assert coverage - 0.025 <= m["coverage"] <= coverage + slack
    assert 1.0 <= m["mean_set_size"] < 5.0


def test_a_perfect_model_gives_single_class_sets_and_a_useless_one_all_classes() -> None:
    y = np.repeat(np.arange(3), 100)
    sure = np.eye(3)[y] * 0.98 + 0.01 / 1.5
    q = conformal_quantile(sure, y, 0.9, "lac")
    assert set_metrics(prediction_sets(sure, q), y)["mean_set_size"] == 1.0
    flat = np.full((300, 3), 1 / 3) + np.random.default_rng(0).normal(0, 1e-3, (300, 3))
    q = conformal_quantile(flat, y, 0.9, "lac")
    assert set_metrics(prediction_sets(flat, q), y)["mean_set_size"] > 2.5


def test_too_few_calibration_cases_give_every_class_and_sets_are_never_empty() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert conformal_quantile(probs, np.array([0, 1]), 0.9) == float("inf")
    members = prediction_sets(np.array([[0.6, 0.4]]), qhat=-1.0)
    assert members.tolist() == [[True, False]]
    with pytest.raises(ValueError):
        conformal_quantile(probs, np.array([0, 1]), 1.5)


def test_set_words() -> None:
    assert set_names([True, False, True], ["pneumonia", "x", "normal"]) == ["pneumonia", "normal"]
    assert describe_set(["pneumonia", "normal"]) == "pneumonia or normal: the model cannot separate these here"
