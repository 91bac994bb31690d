"""Ensembles in one graph (models/ensemble.py): mean probabilities, per-member losses, the named layers, safe loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.errors import ConfigError
from meddx.models import build_model
from meddx.models.outputs import logits_to_probs
from meddx.train.config import TrainConfig, ensemble_members


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("task,units", [("binary", 1), ("multiclass", 4), ("multilabel", 3)])
def test_member_mean_gives_the_logits_of_the_mean_probability(task: str, units: int) -> None:
    from meddx.models.custom_layers import MemberMean

    z = np.random.default_rng(0).normal(0, 4, size=(6, 3 * units)).astype("float32")
    out = np.asarray(MemberMean(3, task)(z))
    members = [logits_to_probs(z[:, k * units:(k + 1) * units], task) for k in range(3)]
    np.testing.assert_allclose(logits_to_probs(out, task), np.mean(members, axis=0), atol=1e-5)
    z[:, :units] = 40.0  # one confident member cannot overflow the mean
    assert np.isfinite(np.asarray(MemberMean(3, task)(z))).all()


@pytest.mark.parametrize("task,units", [("binary", 1), ("multiclass", 3)])
def test_member_loss_is_the_mean_of_each_members_cross_entropy(task: str, units: int) -> None:
    from meddx.models.ensemble import member_loss

    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(5, 2 * units)).astype("float32")
    if task == "binary":
        y = np.array([[0], [1], [1], [0], [1]], np.float32)
        ce = [-(y[:, 0] * np.log(_sigmoid(z[:, k])) + (1 - y[:, 0]) * np.log(1 - _sigmoid(z[:, k]))) for k in (0, 1)]
    else:
        y = np.array([0, 2, 1, 1, 0], np.int32)
        ce = [-np.log(logits_to_probs(z[:, k * 3:(k + 1) * 3], task)[np.arange(5), y]) for k in (0, 1)]
    got = np.asarray(member_loss(2, task)(y, z))
    assert got.shape == (5,)  # per case: sample weights apply as for one model
    np.testing.assert_allclose(got, np.mean(ce, axis=0), rtol=1e-5)


@pytest.mark.parametrize("task,units,members", [("binary", 1, 1), ("multiclass", 3, 2)])
def test_label_smoothing_is_cross_entropy_to_the_smoothed_target(task: str, units: int, members: int) -> None:
    from meddx.models.ensemble import member_loss

    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, size=(4, members * units)).astype("float32")
    eps = 0.2
    if task == "binary":
        y = np.array([[0], [1], [1], [0]], np.float32)
        t = y[:, 0] * (1 - eps) + eps / 2  # 0 -> 0.1, 1 -> 0.9
        p = _sigmoid(z[:, 0])
        want = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    else:
        y = np.array([2, 0, 1, 2], np.int32)
        t = np.full((4, 3), eps / 3)
        t[np.arange(4), y] += 1 - eps  # true class 1 - eps + eps/3, the others eps/3
        want = np.mean([-(t * np.log(logits_to_probs(z[:, k * 3:(k + 1) * 3], task))).sum(axis=1)
                        for k in range(members)], axis=0)
    np.testing.assert_allclose(np.asarray(member_loss(members, task, eps)(y, z)), want, rtol=1e-5)
    plain = np.asarray(member_loss(members, task)(y, z))
    assert not np.allclose(plain, want)  # smoothing changed the loss


def test_label_smoothing_is_checked() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0).validate()
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(task="segmentation", label_smoothing=0.1).validate()


def test_ensemble_graph_keeps_the_named_layers_and_loads_safely(tmp_path: Path) -> None:
    from meddx.explain.cam import grad_cam
    from meddx.models.ensemble import member_count, training_view
    from meddx.models.registry import load_model

    model = build_model("cnn", (28, 28, 1), 2, task="binary", members=3)
    single = build_model("cnn", (28, 28, 1), 2, task="binary")
    assert member_count(model) == 3 and member_count(single) == 1
    assert model.get_layer("features").output.shape[-1] == 3 * single.get_layer("features").output.shape[-1]
    assert training_view(single) is single
    x = np.random.default_rng(2).random((4, 28, 28, 1)).astype("float32")
    side = training_view(model).predict(x, verbose=0)
    assert side.shape == (4, 3)
    members = [logits_to_probs(side[:, k:k + 1], "binary") for k in range(3)]
    assert not np.allclose(members[0], members[1])  # each member has its own weights
    np.testing.assert_allclose(logits_to_probs(model.predict(x, verbose=0), "binary"), np.mean(members, axis=0),
                               atol=1e-5)
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")  # safe_mode: the custom layers are registered
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    cams = grad_cam(again, x)
    assert cams.shape == (4, 28, 28) and np.isfinite(cams).all()


def test_default_members_follow_the_data() -> None:
    cfg = TrainConfig()
    assert ensemble_members(cfg, (28, 28, 1), 546) == 3  # MedMNIST 2D
    assert ensemble_members(cfg, (28, 28, 28, 1), 1000) == 3  # MedMNIST 3D
    assert ensemble_members(cfg, (64, 64, 1), 5000) == 1  # larger images: one model
    assert ensemble_members(cfg, (28, 28, 1), 120) == 1  # tiny sets: one model
    assert ensemble_members(TrainConfig(members=5), (64, 64, 1), 10) == 5


def test_members_are_refused_where_they_do_not_apply() -> None:
    with pytest.raises(ConfigError, match="members"):
        TrainConfig(members=3, task="segmentation").validate()
    with pytest.raises(ConfigError, match="between 1 and 16"):
        TrainConfig(members=0).validate()
    with pytest.raises(ConfigError, match="segmentation network"):
        build_model("unet", (32, 32, 1), 2, task="binary", members=2)
    from meddx.train.sequence import check_sequence_config

    with pytest.raises(ConfigError, match="sequence models train one model"):
        check_sequence_config(TrainConfig(model="lstm", members=3))


def test_a_default_ensemble_keeps_to_the_time_budget() -> None:
    from meddx.train.config import ENSEMBLE_MAX_MINUTES
    from meddx.train.fit import resolve_members

    auto = resolve_members(TrainConfig(), (28, 28, 1), 546)
    assert (auto.members, auto.max_minutes) == (3, ENSEMBLE_MAX_MINUTES)
    assert resolve_members(TrainConfig(max_minutes=2.0), (28, 28, 1), 546).max_minutes == 2.0  # the user's budget
    assert resolve_members(TrainConfig(members=3), (28, 28, 1), 546).max_minutes is None  # asked for: no cap
    assert resolve_members(TrainConfig(), (64, 64, 1), 5000).max_minutes is None  # one model: as before
