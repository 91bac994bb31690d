"""Augmentation: deterministic twins, replayable random transforms, the batch Augmenter."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from meddx.errors import ConfigError, InputError
from meddx.transforms import transform_from_config
from meddx.transforms.augment import (
    AUGMENT_PRESETS,
    Affine,
    Augmenter,
    BrightnessContrast,
    Flip,
    Gamma,
    GaussianNoise,
    RandomAffine,
    RandomBrightnessContrast,
    RandomFlip,
    RandomGamma,
    RandomGaussianNoise,
    RandomRot90,
    RandomRotation,
    RandomScale,
    RandomTranslation,
    Rot90,
    Rotate,
)

ALL_RANDOM = [RandomFlip(axes=(0, -1), p=0.5), RandomRot90(), RandomRotation(20), RandomScale((0.8, 1.2)),
              RandomTranslation(0.1), RandomAffine(10, (0.9, 1.1), 0.05, p=0.7),
              RandomBrightnessContrast(), RandomGaussianNoise(0.1), RandomGamma(0.4)]


@pytest.fixture
def sample2d() -> np.ndarray:
    return np.random.default_rng(0).random((16, 16, 2)).astype(np.float32)


@pytest.fixture
def sample3d() -> np.ndarray:
    return np.random.default_rng(1).random((12, 12, 12, 1)).astype(np.float32)


def test_flip_twice_is_identity(sample2d: np.ndarray, sample3d: np.ndarray) -> None:
    for x in (sample2d, sample3d):
        f = Flip(axes=(0, -1))
        np.testing.assert_array_equal(f(f(x)), x)
        assert not np.array_equal(f(x), x)
    np.testing.assert_array_equal(Flip((-1,))(sample2d), sample2d[:, ::-1])
    np.testing.assert_array_equal(Flip((-1,))(sample3d), sample3d[:, :, ::-1])


def test_rotate_90_equals_rot90(sample2d: np.ndarray, sample3d: np.ndarray) -> None:
    np.testing.assert_allclose(Rotate(90)(sample2d), np.rot90(sample2d, 1, axes=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(Rotate(-90)(sample2d), np.rot90(sample2d, -1, axes=(0, 1)), atol=1e-6)
    np.testing.assert_array_equal(Rot90(1)(sample2d), np.rot90(sample2d, 1, axes=(0, 1)))
    # 3D: default plane is (y, x); another plane on request
    np.testing.assert_allclose(Rotate(90)(sample3d), np.rot90(sample3d, 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(Rotate(90, plane=(0, 2))(sample3d), np.rot90(sample3d, 1, axes=(0, 2)), atol=1e-6)
    np.testing.assert_array_equal(Rot90(3, plane=(0, 1))(sample3d), np.rot90(sample3d, 3, axes=(0, 1)))


def test_affine_scale_and_translation_known_values() -> None:
    x = np.zeros((21, 21, 1), np.float32)
    x[10, 10] = 1.0
    moved = Affine(translation=(3, -2), fill=0.0)(x)
    assert moved[13, 8, 0] == pytest.approx(1.0) and moved.sum() == pytest.approx(1.0)
    ramp = np.tile(np.arange(21, dtype=np.float32), (21, 1))[..., None]
    zoomed = Affine(scale=2.0, fill="nearest")(ramp)
    np.testing.assert_allclose(zoomed[5, 10:13, 0], [10.0, 10.5, 11.0])  # slope halves around the centre
    assert Affine()(x) is x  # identity short-cut


def test_intensity_twins_known_values(sample2d: np.ndarray) -> None:
    out = BrightnessContrast(brightness=0.5, contrast=2.0)(sample2d)
    np.testing.assert_allclose(out.mean(), sample2d.mean() + 0.5, rtol=1e-5)
    np.testing.assert_allclose(out.std(), 2 * sample2d.std(), rtol=1e-4)
    g = Gamma(2.0)(np.array([[[0.0], [0.5], [1.0]]], np.float32))
    np.testing.assert_allclose(g.ravel(), [0.0, 0.25, 1.0])
    n1, n2 = GaussianNoise(0.1, seed=7)(sample2d), GaussianNoise(0.1, seed=7)(sample2d)
    np.testing.assert_array_equal(n1, n2)
    assert 0.08 < float((n1 - sample2d).std()) < 0.12


@pytest.mark.parametrize("t", ALL_RANDOM, ids=lambda t: type(t).__name__)
def test_random_transforms_replay(t, sample2d: np.ndarray, sample3d: np.ndarray) -> None:
    for x in (sample2d, sample3d):
        params = t.sample(np.random.default_rng(5), x.shape)
        json.dumps(params)  # params are plain data: can be logged and replayed
        a, b = t.apply(x, params), t.apply(x, params)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, t.twin(params)(x))  # apply delegates to the twin
        assert a.shape == x.shape and a.dtype == np.float32
        # batch path == per-sample path for the same params
        batch = np.stack([x, x[::-1].copy()])
        plist = t.sample_batch(np.random.default_rng(9), batch.shape)
        out = t.apply_batch(batch.copy(), plist)
        for i in range(2):
            np.testing.assert_allclose(out[i], t.apply(batch[i], plist[i]), rtol=1e-5, atol=1e-6)
        cfg = json.loads(json.dumps(t.get_config()))
        assert transform_from_config(cfg).get_config() == t.get_config()


def test_augmenter_reproducible_and_does_not_modify_input() -> None:
    x = np.random.default_rng(2).random((16, 20, 20, 1)).astype(np.float32)
    keep = x.copy()
    for name in AUGMENT_PRESETS:
        a1, a2 = Augmenter.from_preset(name, 2, seed=3), Augmenter.from_preset(name, 2, seed=3)
        b1, b2 = a1(x), a2(x)
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(a1(x), a2(x))  # the streams stay in step
        assert b1.shape == x.shape and b1.dtype == np.float32
        np.testing.assert_array_equal(x, keep)
        if name != "none":
            assert not np.array_equal(b1, x)
            assert not np.array_equal(b1, a1(x))  # a new call draws new params
    a = Augmenter.from_preset("strong", 2, seed=11)
    params = a.sample(x.shape)
    np.testing.assert_array_equal(a.apply(x, params), a.apply(x, params))
    a.reset()
    first = a(x)
    a.reset()
    np.testing.assert_array_equal(a(x), first)


def test_flip_preset_flips_horizontally_only() -> None:
    x = np.random.default_rng(4).random((64, 8, 8, 1)).astype(np.float32)
    out = Augmenter.from_preset("flip", 2, seed=0)(x)
    same = [np.array_equal(o, s) for o, s in zip(out, x)]
    flipped = [np.array_equal(o, s[:, ::-1]) for o, s in zip(out, x)]
    assert all(a or b for a, b in zip(same, flipped))
    assert 15 < sum(flipped) < 49


def test_augmenter_3d_and_config_round_trip() -> None:
    x = np.random.default_rng(5).random((4, 12, 14, 16, 1)).astype(np.float32)
    aug = Augmenter.from_preset("strong", spatial_ndim=3, seed=1)
    cfg = json.loads(json.dumps(aug.get_config()))
    again = Augmenter.from_config(cfg)
    assert isinstance(transform_from_config(cfg), Augmenter)
    np.testing.assert_array_equal(aug(x), again(x))
    with pytest.raises(InputError, match="batch"):
        aug(x[0])
    with pytest.raises(ConfigError):
        Augmenter.from_preset("extreme", 2)
    with pytest.raises(ConfigError):
        Augmenter([Flip()])


def _median_ms(fn, x, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def test_report_batch_timings(capsys: pytest.CaptureFixture) -> None:
    """Not a timed assertion (benchmarks do that): prints per-batch medians for the record."""
    rng = np.random.default_rng(0)
    x2 = rng.random((128, 28, 28, 1)).astype(np.float32)
    x3 = rng.random((32, 28, 28, 28, 1)).astype(np.float32)
    lines = []
    for name in AUGMENT_PRESETS:
        lines.append(f"{name:>6}  2D 128x28x28x1 {_median_ms(Augmenter.from_preset(name, 2, 0), x2):7.2f} ms"
                     f"   3D 32x28^3x1 {_median_ms(Augmenter.from_preset(name, 3, 0), x3, 3):7.2f} ms")
    with capsys.disabled():
        print("\naugmentation per-batch medians:\n" + "\n".join(lines))
