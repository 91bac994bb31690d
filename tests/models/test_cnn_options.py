"""`cnn` options used by the demo: fewer poolings (finer Grad-CAM grid) and a global-max-pooling head."""

from __future__ import annotations

import pytest

from meddx.errors import ConfigError
from meddx.models.registry import build_model


def test_default_cnn_is_unchanged() -> None:
    m = build_model("cnn", (64, 64, 1), 2, task="binary")
    assert tuple(m.get_layer("features").output.shape[1:3]) == (8, 8)
    assert m.get_layer("gap") is not None


def test_pools_and_max_pooling() -> None:
    m = build_model("cnn", (64, 64, 1), 2, task="binary", filters=[16, 32, 64], pools=1, pooling="max")
    assert tuple(m.get_layer("features").output.shape[1:]) == (16, 16, 64)
    assert m.get_layer("gmp") is not None and m.get_layer("logits").output.shape[-1] == 1
    names = [layer.name for layer in m.layers]
    assert "pool1" in names and "pool2" not in names


@pytest.mark.parametrize("kw", [{"pooling": "median"}, {"pools": 3}, {"pools": -1}])
def test_bad_options(kw: dict) -> None:
    with pytest.raises(ConfigError):
        build_model("cnn", (64, 64, 1), 2, task="binary", **kw)


def test_trainconfig_model_options() -> None:
    from meddx.train.config import TrainConfig

    cfg = TrainConfig().updated({"model_options": {"pooling": "max"}})
    assert cfg.model_options == {"pooling": "max"}
    with pytest.raises(ConfigError):
        TrainConfig().updated({"model_options": "max"})
