"""Preprocessing transforms and the Preprocessing pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meddx.errors import ConfigError, InputError
from meddx.io.image import Image
from meddx.transforms import transform_from_config
from meddx.transforms.preprocess import (
    WINDOW_PRESETS,
    CenterCropPad,
    Compose,
    ForegroundCrop,
    MinMax,
    Preprocessing,
    Resample,
    Resize,
    ScaleIntensity,
    ToChannels,
    Window,
    ZScore,
    _parse_intensity,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# -- intensity -------------------------------------------------------------------------------

def test_window_maps_center_to_half_and_clips() -> None:
    w = Window.preset("brain")
    assert (w.center, w.width) == (40.0, 80.0)
    out = w(np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0]))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32
    assert Window.preset("lung").center == -600 and Window.preset("lung").width == 1500
    assert WINDOW_PRESETS["bone"] == (400.0, 1800.0)
    with pytest.raises(ConfigError, match="unknown CT window"):
        Window.preset("kidney-stone-xyz")


def test_zscore_mean0_std1(rng: np.random.Generator) -> None:
    x = rng.normal(100, 20, (16, 16, 16)).astype(np.int16)
    out = ZScore()(x)
    assert out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4
    y = np.zeros((20, 20))
    y[5:15, 5:15] = rng.normal(50, 5, (10, 10))
    nz = ZScore(nonzero=True)(y)
    assert np.all(nz[y == 0] == 0)
    assert abs(nz[y != 0].mean()) < 1e-5 and abs(nz[y != 0].std() - 1) < 1e-4
    np.testing.assert_array_equal(ZScore()(np.full((4, 4), 7.0)), 0.0)  # constant image: no division by 0


def test_minmax_range_and_percentiles(rng: np.random.Generator) -> None:
    x = rng.normal(0, 1, (64, 64))
    x[0, 0] = 1e6  # outlier ignored by percentiles
    out = MinMax()(x)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.median(out) > 0.3  # not squashed by the outlier
    full = MinMax(percentiles=None)(np.array([2.0, 4.0, 6.0]))
    np.testing.assert_allclose(full, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(MinMax()(np.ones((3, 3))), 0.0)
    np.testing.assert_allclose(ScaleIntensity(1 / 255)(np.array([0, 255], np.uint8)), [0.0, 1.0])


# -- geometry --------------------------------------------------------------------------------

def test_resample_halves_shape_and_keeps_extent() -> None:
    arr = np.arange(64 * 64 * 32, dtype=np.float32).reshape(32, 64, 64)
    img = Image(arr, spacing=(2.0, 1.0, 1.0), origin=(10.0, 20.0, 30.0), spatial_ndim=3)
    out = Resample(spacing=(4.0, 2.0, 2.0))(img)
    assert out.array.shape == (16, 32, 32)
    assert out.spacing == (4.0, 2.0, 2.0)
    extent_in = np.array(arr.shape) * np.array(img.spacing)
    extent_out = np.array(out.array.shape) * np.array(out.spacing)
    np.testing.assert_allclose(extent_in, extent_out)
    # the grid's physical centre is unchanged (origin shifted by half the spacing change)
    centre_in = img.affine_lps() @ np.r_[(np.array(arr.shape) - 1) / 2, 1]
    centre_out = out.affine_lps() @ np.r_[(np.array(out.array.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_in, centre_out)
    # a linear ramp stays a linear ramp (mean preserved)
    assert abs(out.array.mean() - arr.mean()) / arr.mean() < 1e-3


def test_resample_mask_nearest_keeps_labels() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:20] = 1
    mask[10:30, 20:30] = 2
    out = Resample(0.5, order=0)(Image(mask, spacing=(1.0, 1.0)))
    assert out.array.shape == (80, 80) and out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {0, 1, 2}
    assert (out.array == 1).sum() == 4 * (mask == 1).sum()
    with pytest.raises(InputError):
        Resample(1.0)(mask)


def test_resize_2d_3d_channels(rng: np.random.Generator) -> None:
    assert Resize((32, 32))(rng.random((64, 48, 3))).shape == (32, 32, 3)
    vol = rng.random((20, 40, 40))
    out = Resize((10, 20, 20))(vol)
    assert out.shape == (10, 20, 20)
    assert abs(out.mean() - vol.mean()) < 0.01
    assert Resize(16, spatial_ndim=3)(rng.random((8, 8, 8, 2))).shape == (16, 16, 16, 2)
    # anti-aliasing: a checkerboard shrinks to grey, not to a copy of the pattern
    board = (np.indices((64, 64)).sum(0) % 2).astype(float)
    small = Resize((16, 16))(board)
    assert small.std() < 0.05
    # order 0 keeps labels
    labels = Resize((8, 8), order=0)(np.kron(np.arange(4).reshape(2, 2), np.ones((8, 8))).astype(int))
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_center_crop_pad_is_centred() -> None:
    x = np.zeros((10, 10))
    x[4:6, 4:6] = 1
    out = CenterCropPad((6, 6))(x)
    assert out.shape == (6, 6) and out[2:4, 2:4].sum() == 4
    padded = CenterCropPad((14, 12))(x)
    assert padded.shape == (14, 12)
    assert padded[6:8, 5:7].sum() == 4
    rgb = CenterCropPad((5, 15), pad_value="min")(np.full((10, 10, 3), 3.0))
    assert rgb.shape == (5, 15, 3) and np.all(rgb == 3.0)


def test_foreground_crop(rng: np.random.Generator) -> None:
    x = np.zeros((50, 60))
    x[10:20, 30:45] = rng.random((10, 15)) + 1
    out = ForegroundCrop(margin=2)(x)
    assert out.shape == (14, 19)
    img = Image(x, spacing=(1.0, 1.0))
    cropped = ForegroundCrop()(img)
    assert cropped.array.shape == (10, 15)
    assert cropped.origin[:2] == (10.0, 30.0)  # direction identity: origin follows the crop
    assert ForegroundCrop()(np.zeros((5, 5))).shape == (5, 5)  # empty foreground: unchanged


def test_to_channels() -> None:
    g = np.random.default_rng(1).random((8, 8, 1))
    rgb = ToChannels(3)(g)
    assert rgb.shape == (8, 8, 3) and np.all(rgb[..., 0] == rgb[..., 2])
    np.testing.assert_allclose(ToChannels(1)(rgb)[..., 0], g[..., 0], rtol=1e-5)
    assert ToChannels(3, spatial_ndim=2)(np.zeros((4, 4))).shape == (4, 4, 3)
    assert ToChannels(3)(np.zeros((4, 4, 4))).shape == (4, 4, 3)  # RGBA drops alpha
    with pytest.raises(InputError, match="2 channels"):
        ToChannels(3)(np.zeros((4, 4, 2)))


def test_transform_configs_round_trip(rng: np.random.Generator) -> None:
    x = rng.normal(0, 300, (12, 16, 16))
    transforms = [Window.preset("lung"), ZScore(nonzero=True), MinMax((1, 99)), ScaleIntensity(2, 1),
                  Resize((6, 8, 8)), CenterCropPad((10, 20, 20), pad_value="min"), ForegroundCrop(0.5, 1),
                  Compose([Window(40, 400), Resize((4, 4, 4))])]
    for t in transforms:
        cfg = json.loads(json.dumps(t.get_config()))
        assert cfg["class"] == type(t).__name__
        again = transform_from_config(cfg)
        np.testing.assert_array_equal(t(x), again(x))
    with pytest.raises(ConfigError):
        transform_from_config({"class": "os.system", "command": "true"})


# -- pipeline --------------------------------------------------------------------------------

def test_pipeline_2d_shapes_and_dtypes(rng: np.random.Generator) -> None:
    prep = Preprocessing(spatial_ndim=2, image_size=28, channels=1)
    assert prep.output_shape == (28, 28, 1)
    for arr in (rng.random((64, 48)), rng.integers(0, 255, (30, 30, 3), dtype=np.uint8),
                rng.random((28, 28, 1)), Image(rng.random((40, 40)), spacing=(0.5, 0.5))):
        out = prep(arr)
        assert out.shape == (28, 28, 1) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    rgb = Preprocessing(2, (32, 24), channels=3, intensity="scale255")
    out = rgb(rng.integers(0, 255, (64, 64), dtype=np.uint8))
    assert out.shape == (32, 24, 3)
    assert np.all(out[..., 0] == out[..., 1])


def test_pipeline_3d_with_spacing_and_window(rng: np.random.Generator) -> None:
    vol = rng.normal(40, 30, (20, 50, 50)).astype(np.int16)
    img = Image(vol, spacing=(5.0, 0.8, 0.8), spatial_ndim=3, modality="CT")
    prep = Preprocessing(3, 28, 1, intensity="window:brain", spacing=(2.0, 2.0, 2.0), crop="foreground")
    out = prep(img)
    assert out.shape == (28, 28, 28, 1) and out.dtype == np.float32
    assert 0.4 < out.mean() < 0.6  # brain window centred on 40 HU
    assert prep(vol[..., None]).shape == (28, 28, 28, 1)  # raw (z, y, x, c) works too


def test_pipeline_config_round_trip_identical(rng: np.random.Generator) -> None:
    imgs = [rng.normal(0, 1, (40 + i, 36)) for i in range(5)]
    for kw in ({"intensity": "zscore"}, {"intensity": "minmax:1,99", "channels": 3},
               {"intensity": "window:-600,1500", "crop": "foreground"}):
        prep = Preprocessing(2, (24, 20), **kw)
        cfg = json.loads(json.dumps(prep.get_config()))  # as stored in a RUN folder
        again = Preprocessing.from_config(cfg)
        assert again.get_config() == prep.get_config()
        np.testing.assert_array_equal(prep.batch(imgs), again.batch(imgs))
        assert isinstance(transform_from_config(cfg), Preprocessing)
    with pytest.raises(ConfigError, match="intensity"):
        Preprocessing(2, 28, intensity="sqrt")
    with pytest.raises(ConfigError):
        Preprocessing.from_config({"spatial_ndim": 2, "image_size": 28, "bogus": 1})


def test_pipeline_batch(rng: np.random.Generator) -> None:
    prep = Preprocessing(2, 16, 1, intensity="scale255")
    stack = rng.integers(0, 255, (250, 28, 28), dtype=np.uint8)  # >= 200: progress bar path
    out = prep.batch(stack, progress=False)
    assert out.shape == (250, 16, 16, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[3], prep(stack[3]))
    assert prep.batch([]).shape == (0, 16, 16, 1)


def test_pipeline_wrong_dimensions_raise_input_error(rng: np.random.Generator) -> None:
    p3 = Preprocessing(3, 16)
    with pytest.raises(InputError, match=r"^expected a 3D volume, got a 2D image of shape \(64, 64\)$"):
        p3(np.zeros((64, 64)))
    with pytest.raises(InputError, match="2D image"):
        p3(Image(np.zeros((64, 64)), source="x.png"))
    with pytest.raises(InputError, match="colour image"):
        p3(np.zeros((64, 64, 3)))
    p2 = Preprocessing(2, 16)
    with pytest.raises(InputError, match=r"expected a 2D image, got a 3D volume of shape \(10, 64, 64\)"):
        p2(np.zeros((10, 64, 64)))
    with pytest.raises(InputError, match="3D volume"):
        p2(Image(np.zeros((10, 64, 64)), spatial_ndim=3))
    with pytest.raises(InputError, match="sequence"):
        p2(Image(np.zeros((5, 32, 32)), is_sequence=True))
    with pytest.raises(InputError):
        p2(np.zeros(10))
    bad = rng.random((32, 32))
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN") as info:
        p2(Image(bad, source="scan.nii"))
    assert "scan.nii" in str(info.value) and "\n" not in str(info.value)


def test_pipeline_fit_modes_keep_aspect() -> None:
    x = np.zeros((40, 80))
    x[:, :40] = 1.0  # left half bright
    pad = Preprocessing(2, 20, intensity="none", fit="pad")(x)[..., 0]
    assert pad.shape == (20, 20)
    np.testing.assert_array_equal(pad[:5], 0.0)  # padded rows above and below
    assert pad[10, :9].min() > 0.99 and pad[10, 11:].max() < 0.01
    crop = Preprocessing(2, 20, intensity="none", fit="crop")(x)[..., 0]
    assert crop.shape == (20, 20)
    assert crop[:, :9].min() > 0.99 and crop[:, 11:].max() < 0.01  # centre of the image, full height
    with pytest.raises(ConfigError):
        Preprocessing(2, 20, fit="squash")


def test_pipeline_resamples_only_known_spacing() -> None:
    x = np.zeros((64, 32))
    x[16:48, 8:24] = 1.0
    prep = Preprocessing(2, 32, intensity="none", spacing=1.0, fit="pad")
    # 0.5 x 1 mm pixels: the square object is 32 x 16 pixels -> 16 x 16 mm after resampling
    out = prep(Image(x, spacing=(0.5, 1.0)))[..., 0]
    rows, cols = np.flatnonzero(out.max(1) > 0.5), np.flatnonzero(out.max(0) > 0.5)
    assert abs(len(rows) - len(cols)) <= 1
    # unknown spacing (nominal 1 mm, no geometry) and raw arrays: no resampling
    np.testing.assert_array_equal(prep(Image(x)), prep(x))


def test_select_channels_keeps_the_named_channels_and_round_trips() -> None:
    """select_channels=[1] keeps only channel 1 (e.g. FLAIR of pre/FLAIR/post); the config survives a round trip."""
    from meddx.errors import InputError
    from meddx.transforms.preprocess import Preprocessing

    rgb = np.zeros((16, 16, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1.0, np.arange(16)[None, :], 5.0
    prep = Preprocessing(spatial_ndim=2, image_size=16, channels=1, intensity="none", select_channels=[1])
    out = prep(rgb)
    assert out.shape == (16, 16, 1)
    np.testing.assert_allclose(out[..., 0], rgb[..., 1])
    again = Preprocessing.from_config(prep.get_config())
    np.testing.assert_allclose(again(rgb), out)
    with pytest.raises(InputError, match="3 channel"):
        Preprocessing(spatial_ndim=2, image_size=16, channels=1, select_channels=[3])(rgb)


def test_zscore_channel_normalises_each_channel_on_its_own() -> None:
    from meddx.transforms.preprocess import Preprocessing

    rng = np.random.default_rng(0)
    img = np.stack([rng.normal(10, 2, (20, 20)), rng.normal(-5, 9, (20, 20))], axis=-1).astype(np.float32)
    out = Preprocessing(spatial_ndim=2, image_size=20, channels=2, intensity="zscore:channel")(img)
    np.testing.assert_allclose(out.reshape(-1, 2).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.reshape(-1, 2).std(0), 1, atol=1e-3)


def test_zscore_foreground_ignores_how_the_background_was_stored(rng: np.random.Generator) -> None:
    """The same head on an exact-zero background and on a low-noise background (both occur in LGG MR)
    normalises to the same values with 'foreground'; 'nonzero' statistics follow the noise instead."""
    yy, xx = np.mgrid[:64, :64]
    head = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 22 ** 2, rng.normal(80, 10, (64, 64)), 0.0)
    head[28:36, 28:36] = 200.0  # a bright lesion
    noisy = np.where(head > 0, head, rng.uniform(1, 12, (64, 64)))
    inside = head > 0
    fg = _parse_intensity("zscore:foreground")
    a, b = fg(head)[inside], fg(noisy)[inside]
    np.testing.assert_allclose(a, b, atol=0.05)
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1
    nz = _parse_intensity("zscore:nonzero")
    assert np.abs(nz(head)[inside] - nz(noisy)[inside]).mean() > 0.3  # what 'foreground' fixes
    with pytest.raises(ConfigError):
        _parse_intensity("zscore:nonzero,foreground")
    cfg = Preprocessing(spatial_ndim=2, image_size=32, channels=1, intensity="zscore:foreground").get_config()
    assert "foreground" in str(cfg)
