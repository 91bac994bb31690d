"""Augmentation of an image and its mask: replay, masks move with images, one preset table for every task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meddx.transforms import transform_from_config
from meddx.transforms.augment import (
    AUGMENT_PRESETS,
    PRESETS,
    Affine,
    Augmenter,
    Crop,
    Flip,
    RandomAffine,
    RandomBrightnessContrast,
    RandomChannelDropout,
    RandomCrop,
    RandomFlip,
    RandomGamma,
    RandomGaussianNoise,
    RandomLesionFade,
    RandomRot90,
    preset_flip_axes,
    preset_transforms,
)

SPATIAL = [RandomFlip(axes=(0, -1), p=0.5), RandomRot90(), RandomAffine(20, (0.8, 1.2), 0.1, p=0.8),
           RandomCrop(12, centre_on_mask_p=0.5)]
INTENSITY = [RandomBrightnessContrast(), RandomGamma(0.4), RandomGaussianNoise(0.1), RandomChannelDropout(0.9),
             RandomLesionFade(1.0)]


def disc(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    """A binary ball (*shape) of `radius` around `centre`."""
    grid = np.indices(shape, dtype=np.float64)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2).astype(np.uint8)


def pair(nsp: int, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image (2 channels: a bright off-centre disc on textured tissue) and its mask; a batch if n."""
    rng = np.random.default_rng(seed)
    side = 24 if nsp == 2 else 16
    shape = (side,) * nsp
    masks, images = [], []
    for _ in range(n or 1):
        centre = tuple(rng.uniform(side * 0.3, side * 0.6, nsp))
        m = disc(shape, centre, side / 6)
        img = rng.normal(0, 0.05, shape + (2,)).astype(np.float32) + 1.0
        img[m > 0] += 2.0
        images.append(img)
        masks.append(m[..., None])
    if n is None:
        return images[0], masks[0]
    return np.stack(images), np.stack(masks)


def centroid(m: np.ndarray) -> np.ndarray:
    """Centre of mass of a (*spatial) foreground."""
    return np.argwhere(m > 0.5).mean(axis=0)


@pytest.mark.parametrize("nsp", [2, 3])
@pytest.mark.parametrize("t", SPATIAL + INTENSITY, ids=lambda t: type(t).__name__)
def test_random_transform_replays_image_and_mask(t, nsp: int) -> None:
    x, m = pair(nsp)
    params = t.sample(np.random.default_rng(3), x.shape)
    json.dumps(params)  # plain data: logged and replayed
    a = t.apply(x, params, m)
    b = t.twin(params)(x, m)  # apply delegates to the deterministic twin
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert a[1].dtype == m.dtype and a[0].shape[:-1] == a[1].shape[:-1]
    for u, v in zip(t.apply(x, params, m), a):  # same params, same output
        np.testing.assert_array_equal(u, v)
    if not isinstance(t, (RandomCrop, RandomLesionFade)):  # only the mask-aware ones read the mask
        np.testing.assert_array_equal(t.apply(x, params), a[0])


@pytest.mark.parametrize("nsp", [2, 3])
@pytest.mark.parametrize("name", AUGMENT_PRESETS)
def test_augmenter_same_seed_replays_image_and_mask(name: str, nsp: int) -> None:
    x, m = pair(nsp, n=6)
    extras = [RandomCrop(12, centre_on_mask_p=0.5), RandomChannelDropout(0.5), RandomLesionFade(0.5)]
    keep = (x.copy(), m.copy())
    a1, a2 = (Augmenter.from_preset(name, nsp, seed=5, extras=extras) for _ in range(2))
    for _ in range(2):  # the two streams stay in step
        (x1, m1), (x2, m2) = a1(x, m), a2(x, m)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(m1, m2)
        assert x1.shape == (6, *(12,) * nsp, 2) and m1.shape == (6, *(12,) * nsp, 1) and m1.dtype == np.uint8
    np.testing.assert_array_equal(x, keep[0])  # inputs untouched
    np.testing.assert_array_equal(m, keep[1])
    params = a1.sample(x.shape)
    first = a1.apply(x, params, m)
    for u, v in zip(first, a1.apply(x, params, m)):  # sample + apply replays
        np.testing.assert_array_equal(u, v)
    assert a1.output_shape([None, *x.shape[1:]]) == [None, *(12,) * nsp, 2]
    again = Augmenter.from_config(json.loads(json.dumps(a1.get_config())))
    again.reset(5)
    a1.reset()
    for u, v in zip(a1(x, m), again(x, m)):  # the config rebuilds the same stack
        np.testing.assert_array_equal(u, v)


def test_images_without_masks_keep_the_classifier_stream() -> None:
    """Giving masks changes nothing for the images: the classifier's outputs stay what they were."""
    x, m = pair(2, n=8)
    for name in AUGMENT_PRESETS:
        with_masks = Augmenter.from_preset(name, 2, seed=1)(x, m)[0]
        np.testing.assert_array_equal(Augmenter.from_preset(name, 2, seed=1)(x), with_masks)
    aug, rng = Augmenter.from_preset("light", 2), np.random.default_rng(2)
    np.testing.assert_array_equal(aug(x, rng), Augmenter.from_preset("light", 2)(x, rng=np.random.default_rng(2)))


@pytest.mark.parametrize("nsp", [2, 3])
def test_mask_stays_binary_and_moves_with_the_image(nsp: int) -> None:
    """A disc's centroid moves identically in the image and the mask under flips and affines."""
    x, m = pair(nsp, seed=4)
    side = x.shape[0]
    flip = Flip(axes=(-1,))
    fx, fm = flip(x, m)
    np.testing.assert_array_equal(fm, m[..., ::-1, :])
    np.testing.assert_array_equal(fx, x[..., ::-1, :])
    before = centroid(m[..., 0])
    expect = before.copy()
    expect[-1] = side - 1 - before[-1]
    np.testing.assert_allclose(centroid(fm[..., 0]), expect)
    for aff in (Affine(angle=25, translation=[2.0] * nsp), Affine(angle=-40, scale=1.2),
                Affine(angle=90, translation=[-3.0] * nsp)):
        ax, am = aff(x, m)
        assert set(np.unique(am)) <= {0, 1} and am.dtype == m.dtype
        mat, off = aff.matrix(m.shape[:-1])
        want = np.linalg.solve(mat, before - off)  # input = M @ output + offset
        got_mask, got_image = centroid(am[..., 0]), centroid(ax[..., 0] > 2.0)
        np.testing.assert_allclose(got_mask, want, atol=0.5)
        np.testing.assert_allclose(got_image, got_mask, atol=0.5)
        assert ((ax[..., 0] > 2.0) == (am[..., 0] > 0)).mean() > 0.97


def test_masks_of_any_dtype_with_or_without_a_channel_axis() -> None:
    x, m = pair(2, n=4)
    aug = Augmenter.from_preset("light", 2, seed=0)
    params = aug.sample(x.shape)
    base = aug.apply(x, params, m)[1]
    assert base.dtype == np.uint8 and base.shape == m.shape
    for mask in (m[..., 0], m.astype(bool), m.astype(np.float32), m[..., 0].astype(bool)):
        out = aug.apply(x, params, mask)[1]
        assert out.dtype == mask.dtype and out.shape == mask.shape
        np.testing.assert_array_equal(out.reshape(base.shape).astype(np.uint8), base)
    with pytest.raises(ValueError, match="mask"):
        aug(x, m[:, :10])


@pytest.mark.parametrize("t", INTENSITY, ids=lambda t: type(t).__name__)
def test_intensity_transforms_leave_the_mask_alone(t) -> None:
    x, m = pair(2, n=8)
    params = t.sample_batch(np.random.default_rng(0), x.shape)
    out, mo = t.apply_batch(x.copy(), params, m)
    np.testing.assert_array_equal(mo, m)
    assert not np.array_equal(out, x)  # it did change the images
    for i in range(len(x)):
        np.testing.assert_array_equal(t.apply(x[i], params[i], m[i])[1], m[i])
    aug = Augmenter([t], seed=1)
    np.testing.assert_array_equal(aug(x, m)[1], m)


def test_lesion_fade_and_channel_dropout_do_what_they_say() -> None:
    x, m = pair(2, n=4)
    faded, _ = RandomLesionFade(1.0, max_amount=0.9)(x[0], m[0], rng=np.random.default_rng(1))
    inside, outside = m[0, ..., 0] > 0, m[0, ..., 0] == 0
    assert (faded[inside].mean() - faded[outside].mean()) < (x[0][inside].mean() - x[0][outside].mean())
    dropped = RandomChannelDropout(1.0).apply_batch(x.copy(), RandomChannelDropout(1.0).sample_batch(
        np.random.default_rng(0), x.shape))
    assert ((dropped == 0).all(axis=(1, 2)).sum(axis=1) == 1).all()  # exactly one channel per image


def test_crop_centred_on_the_mask_holds_foreground() -> None:
    x, m = pair(2, seed=2)
    m[:] = 0
    m[20:23, 1:3] = 1  # a corner lesion
    held = [Crop(8, centre_on_mask=True, pick=p)(x, m)[1].sum() > 0 for p in np.linspace(0, 0.99, 9)]
    assert all(held)
    a, b = Crop(8, start=[0.0, 0.0])(x, m)
    np.testing.assert_array_equal(a, x[:8, :8])
    assert b.sum() == 0
    assert Crop(8, centre_on_mask=True)(x, np.zeros_like(m))[0].shape == (8, 8, 2)  # no lesion: uniform start
    with pytest.raises(ValueError, match="larger"):
        Crop(30)(x, m)


def test_sequences_move_every_frame_alike() -> None:
    """Sequences (N, T, *spatial, C): one draw per sequence, the same for all its frames (or slices)."""
    x, m = pair(2, n=3)
    clips, masks = np.repeat(x[:, None], 5, axis=1), np.repeat(m[:, None], 5, axis=1)
    aug = Augmenter.from_preset("strong", 2, seed=3)
    differ = 0
    for _ in range(4):
        cx, cm = aug.apply_sequences(clips, masks)
        assert cx.shape == clips.shape and cm.shape == masks.shape
        for i in range(3):
            for f in range(1, 5):
                np.testing.assert_array_equal(cx[i, f], cx[i, 0])
                np.testing.assert_array_equal(cm[i, f], cm[i, 0])
        differ += not np.array_equal(cx[0, 0], x[0])
    assert differ > 0
    assert aug.apply_sequences(clips).shape == clips.shape


def test_each_preset_is_the_same_for_every_task() -> None:
    """Classification (`train.fit`) and segmentation (`train.seg_pipeline`) build a preset from one table."""
    from meddx.train.seg_pipeline import segmentation_augmenter

    assert AUGMENT_PRESETS == ("none", "flip", "light", "strong")
    for name in AUGMENT_PRESETS:
        table = [dict(cfg) for cfg in PRESETS[name]]
        for nsp in (2, 3):
            cls = Augmenter.from_preset(name, nsp, seed=0)
            assert [t.get_config() for t in cls.transforms] == [transform_from_config(c).get_config() for c in table]
            seg = segmentation_augmenter(name, nsp, seed=0)
            assert [t.get_config() for t in (seg.transforms if seg else [])] == [t.get_config() for t in cls.transforms]
            extra = segmentation_augmenter(name, nsp, seed=0, channel_dropout=0.5, lesion_fade=0.5, patch=16)
            assert [t.get_config() for t in extra.transforms[:len(table)]] == [t.get_config() for t in cls.transforms]
            assert [type(t) for t in extra.transforms[len(table):]] == [RandomCrop, RandomChannelDropout,
                                                                        RandomLesionFade]
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        preset_transforms("extreme")


@pytest.mark.parametrize("nsp", [2, 3])
@pytest.mark.parametrize("name", AUGMENT_PRESETS)
def test_flip_axes_agree_with_the_table(name: str, nsp: int) -> None:
    from meddx.train.seg_pipeline import flip_axes

    table = sorted({a % nsp for cfg in PRESETS[name] if cfg["class"] == "RandomFlip" for a in cfg["axes"]})
    assert flip_axes(name, nsp) == preset_flip_axes(name, nsp) == table
    assert flip_axes(name, nsp) == ([] if name == "none" else [nsp - 1])  # left-right only
    x = np.random.default_rng(0).random((32, *(6,) * nsp, 1)).astype(np.float32)
    flips = [t for t in Augmenter.from_preset(name, nsp, seed=0).transforms if isinstance(t, RandomFlip)]
    if flips:  # the flips the preset draws are on exactly those axes
        params = flips[0].sample_batch(np.random.default_rng(1), x.shape)
        assert {a for p in params for a in p["axes"]} == set(table)


@pytest.mark.slow
def test_graph_path_applies_the_same_params_as_the_numpy_twins() -> None:
    """augment_tf (the 2D segmentation pipeline's fast path) consumes `Augmenter.sample`'s params: masks
    match the numpy twins', images match away from the warp's border (fill differs there)."""
    tf = pytest.importorskip("tensorflow")
    from meddx.train.seg_pipeline import segmentation_augmenter
    from meddx.transforms import augment_tf

    x, m = pair(2, n=8, seed=7)
    m = m.astype(np.float32)
    for name in AUGMENT_PRESETS[1:]:
        aug = segmentation_augmenter(name, 2, seed=2, channel_dropout=0.5, lesion_fade=0.5, patch=16)
        assert augment_tf.supports(aug, 2)
        params = aug.sample(x.shape)
        ref_x, ref_m = aug.apply(x, params, m)
        got_x, got_m = (t.numpy() for t in augment_tf.apply_encoded(
            aug, tf.constant(x), tf.constant(m), augment_tf.encode_params(aug, x.shape, params)))
        assert got_x.shape == ref_x.shape and got_m.shape == ref_m.shape
        assert (got_m == ref_m).mean() > 0.995
        close = np.isclose(got_x, ref_x, atol=0.2 if name == "strong" else 1e-3)  # strong: noise differs
        assert close.mean() > 0.9, (name, close.mean())


@pytest.mark.slow
def test_tf_function_for_masks_and_sequences() -> None:
    tf = pytest.importorskip("tensorflow")
    x, m = pair(2, n=8)
    aug = Augmenter.from_preset("light", 2, seed=0, extras=[RandomCrop(16, centre_on_mask_p=0.5)])
    ds = tf.data.Dataset.from_tensor_slices((x, m)).batch(4).map(aug.as_tf_function())
    assert ds.element_spec[0].shape.as_list() == [None, 16, 16, 2]
    assert ds.element_spec[1].shape.as_list() == [None, 16, 16, 1] and ds.element_spec[1].dtype == tf.uint8
    got = [(a.numpy(), b.numpy()) for a, b in ds]
    ref = Augmenter.from_preset("light", 2, seed=0, extras=[RandomCrop(16, centre_on_mask_p=0.5)])
    for k, (a, b) in enumerate(got):
        ra, rb = ref(x[4 * k: 4 * k + 4], m[4 * k: 4 * k + 4])
        np.testing.assert_array_equal(a, ra)
        np.testing.assert_array_equal(b, rb)
    clips = np.repeat(x[:, None], 3, axis=1)
    seq = Augmenter.from_preset("flip", 2, seed=0).as_tf_function(sequences=True)
    out = tf.data.Dataset.from_tensor_slices(clips).batch(4).map(seq)
    assert out.element_spec.shape.as_list() == [None, 3, 24, 24, 2]
    for batch in out:
        b = batch.numpy()
        assert all(np.array_equal(b[:, f], b[:, 0]) for f in range(3))


def test_sequence_padding_frames_stay_zero_under_every_preset() -> None:
    """Sequence models mask frames that are exactly all 0; augmentation must not bring them back."""
    from meddx.transforms.augment import Augmenter

    rng = np.random.default_rng(0)
    seqs = rng.random((3, 6, 16, 16, 1)).astype(np.float32) + 0.1
    seqs[:, 4:] = 0.0  # two padding frames per sequence
    for preset in ("flip", "light", "strong"):
        out = Augmenter.from_preset(preset, 2, seed=1).apply_sequences(seqs.copy())
        assert out.shape == seqs.shape
        assert not out[:, 4:].any(), preset
        assert out[:, :4].reshape(3, 4, -1).any(axis=2).all(), preset  # real frames are not blanked
