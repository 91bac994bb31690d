"""Handcrafted features: shapes, finiteness, 2D gray/RGB/3D inputs, and that they carry signal."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.classic.features import extract_features, feature_names, image_features, to_gray_2d


def test_feature_vector_shape_and_finite_for_gray_rgb_uint8_float():
    rng = np.random.default_rng(0)
    n = len(feature_names())
    gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    for img in (gray, gray.astype(np.float32) / 255.0, np.stack([gray] * 3, -1), gray[..., None],
                np.zeros((28, 28), np.uint8), np.full((28, 28), 7.5, np.float64)):
        f = image_features(img)
        assert f.shape == (n,) and f.dtype == np.float32
        assert np.isfinite(f).all()
    # gray given as uint8 or as float in [0, 1] describes the same image
    np.testing.assert_allclose(image_features(gray), image_features(gray.astype(np.float64) / 255.0), atol=1e-5)
    # an RGB image with equal channels is its gray image
    np.testing.assert_allclose(image_features(np.stack([gray] * 3, -1)), image_features(gray), atol=1e-4)


def test_first_order_values_are_right():
    img = np.zeros((32, 32), np.float64)
    img[:, 16:] = 1.0
    f = dict(zip(feature_names(), image_features(img)))
    assert f["mean"] == pytest.approx(0.5)
    assert f["std"] == pytest.approx(0.5)
    assert f["entropy"] == pytest.approx(1.0)  # two equally likely grey levels = 1 bit
    assert f["p50"] in (0.0, 0.5, 1.0)


def test_volume_aggregates_over_slices():
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    f = image_features(vol)
    assert f.shape == (2 * len(feature_names()),) and np.isfinite(f).all()
    batch = extract_features(np.stack([vol, vol[::-1]]), progress=False)
    assert batch.shape == (2, 2 * len(feature_names()))
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5)  # mean/std over slices ignore slice order


def test_extract_features_batch_and_iterable():
    rng = np.random.default_rng(2)
    imgs = rng.random((5, 28, 28)).astype(np.float32)
    a = extract_features(imgs, progress=False)
    b = extract_features(iter(list(imgs)), progress=False)
    assert a.shape == (5, len(feature_names()))
    np.testing.assert_allclose(a, b)
    assert extract_features(np.zeros((0, 28, 28)), progress=False).shape == (0, len(feature_names()))


def test_texture_features_separate_smooth_from_noisy():
    rng = np.random.default_rng(3)
    smooth = np.tile(np.linspace(0, 1, 32), (32, 1))
    noisy = rng.random((32, 32))
    names = feature_names()
    fs, fn = dict(zip(names, image_features(smooth))), dict(zip(names, image_features(noisy)))
    assert fn["glcm_contrast_d1_mean"] > 10 * fs["glcm_contrast_d1_mean"]
    assert fs["glcm_homogeneity_d1_mean"] > fn["glcm_homogeneity_d1_mean"]


def test_bad_shape_raises():
    with pytest.raises(ValueError):
        to_gray_2d(np.zeros((4, 4, 4, 4)))
