"""Training input pipelines of the segmenters: 2D in-memory tf.data with flips, affine, lesion fade, channel
dropout and lesion-centred crops; 3D random patches (half centred on foreground) as a keras PyDataset."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def flip_axes(augment: str, ndim: int) -> list[int]:
    """Spatial axes (of one sample) flipped at random: 'flip' = left-right only; light/strong = all."""
    if augment == "none":
        return []
    if augment == "flip":
        return [ndim - 1]
    return list(range(ndim))


# preset -> (max degrees, max zoom fraction, max shift as a fraction of the side, channel contrast/brightness jitter)
AFFINE_2D = {"light": (10.0, 0.1, 0.05, 0.1), "strong": (20.0, 0.2, 0.1, 0.25)}


def _random_affine_2d(ab: Any, degrees: float, zoom: float, size: tuple[int, int], shift: float = 0.0) -> Any:
    """Rotate, zoom and shift one (H, W, C) tensor about its centre (bilinear, zeros outside); the shift
    keeps a network from learning where lesions usually sit in the few training patients."""
    import tensorflow as tf

    theta = tf.random.uniform((), -degrees, degrees) * math.pi / 180.0
    scale = tf.random.uniform((), 1.0 - zoom, 1.0 + zoom)
    h, w = float(size[0]), float(size[1])
    ty, tx = tf.unstack(tf.random.uniform((2,), -shift, shift) * tf.constant([h, w]))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    # output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotation/zoom about the centre, then a shift
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy - tx, sin, cos, cy - sin * cx - cos * cy - ty,
                          0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=ab[None], transforms=transform[None], output_shape=tf.constant(size, tf.int32),
        interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)
    return out[0]


LESION_FADE_MAX = 0.9  # --lesion-fade cuts a lesion's contrast by a random fraction up to this


def _fade_lesion(img: Any, msk: Any, amount: Any) -> Any:
    """Shift the lesion's mean intensity (per channel) `amount` of the way towards the tissue in a
    ring around it, keeping its texture and softening the edge: a faint version of a visible lesion."""
    import tensorflow as tf

    def mean_over(weights: Any) -> Any:
        return tf.reduce_sum(img * weights, axis=[0, 1]) / tf.maximum(tf.reduce_sum(weights, axis=[0, 1]), 1.0)

    def box_mean(k: int) -> Any:  # k x k mean as two 1-D passes (same values; TF's 2-D pooling is slow on CPU)
        rows = tf.nn.avg_pool2d(msk[None], ksize=[1, k], strides=1, padding="SAME")
        return tf.nn.avg_pool2d(rows, ksize=[k, 1], strides=1, padding="SAME")[0]

    soft = box_mean(5)  # zero everywhere without a lesion
    near = box_mean(15)
    tissue = img > tf.reduce_min(img, axis=[0, 1], keepdims=True) + 1e-3  # not the background
    ring = tf.cast((near > 0) & (msk < 0.5) & tissue, img.dtype)
    has_ring = tf.cast(tf.reduce_sum(ring) > 0, img.dtype)
    return img - amount * has_ring * soft * (mean_over(tf.cast(msk > 0.5, img.dtype)) - mean_over(ring))


def _random_crop_2d(img: Any, msk: Any, patch: int, lesion_p: float = 0.5) -> tuple[Any, Any]:
    """A (patch, patch) crop of one (H, W, C) image and its (H, W, 1) mask: with probability `lesion_p`
    (when there is lesion) centred on a random lesion pixel, else at a uniformly random place."""
    import tensorflow as tf

    h, w = tf.shape(img)[0], tf.shape(img)[1]
    fg = tf.cast(tf.where(msk[..., 0] > 0.5), tf.int32)
    n = tf.shape(fg)[0]
    on_lesion = (n > 0) & (tf.random.uniform(()) < lesion_p)
    pick = tf.random.uniform((), 0, tf.maximum(n, 1), dtype=tf.int32)
    centre = tf.gather(tf.concat([fg, tf.zeros((1, 2), tf.int32)], axis=0), pick)  # the zero row only when n == 0
    lesion_start = tf.clip_by_value(centre - patch // 2, 0, tf.stack([h - patch, w - patch]))
    random_start = tf.stack([tf.random.uniform((), 0, h - patch + 1, dtype=tf.int32),
                             tf.random.uniform((), 0, w - patch + 1, dtype=tf.int32)])
    start = tf.where(on_lesion, lesion_start, random_start)
    begin = tf.concat([start, [0]], axis=0)
    img = tf.slice(img, begin, [patch, patch, img.shape[-1]])
    msk = tf.slice(msk, begin, [patch, patch, msk.shape[-1]])
    return img, msk


def tf_dataset_2d(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, axes: list[int],
                   augment: str = "flip", channel_dropout: float = 0.0, lesion_fade: float = 0.0,
                   patch: int | None = None) -> Any:
    """Shuffled batches with the same random flips (and, for light/strong, rotation + zoom) applied
    to image and mask; light/strong also jitter each channel's contrast and brightness. With
    `channel_dropout` p > 0 and several channels, one channel chosen at random is zeroed with
    probability p, so the network cannot rely on a single sequence (e.g. contrast enhancement). With
    `lesion_fade` p > 0, the labelled lesion's contrast to its surroundings is cut by a random 0-90 %
    with probability p, so a network trained on conspicuous lesions also sees faint ones. With `patch`,
    each image is cropped to (patch, patch) after the flips and affine, before the channel dropout and
    fade; half of the lesion slices' crops are centred on lesion."""
    import tensorflow as tf

    c = x.shape[-1]
    size = (int(x.shape[1]), int(x.shape[2]))
    affine = AFFINE_2D.get(augment)
    drop_p = float(channel_dropout) if c > 1 else 0.0
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def aug(a: Any, b: Any) -> Any:
        ab = tf.concat([a, b], axis=-1)
        for ax in axes:
            flip = tf.random.uniform(()) < 0.5
            ab = tf.cond(flip, lambda t=ab, k=ax: tf.reverse(t, [k]), lambda t=ab: t)
        img, msk = ab[..., :c], ab[..., c:]
        if affine is not None:
            degrees, zoom, shift, jitter = affine
            ab = _random_affine_2d(ab, degrees, zoom, size, shift)
            img = ab[..., :c] * tf.random.uniform((c,), 1.0 - jitter, 1.0 + jitter) + tf.random.uniform(
                (c,), -jitter, jitter)
            msk = tf.cast(ab[..., c:] > 0.5, ab.dtype)
        if patch is not None:  # before the fade: its pooling then runs on the crop, not the whole image
            img, msk = _random_crop_2d(img, msk, patch)
        if drop_p > 0:
            hit = tf.cast(tf.random.uniform(()) < drop_p, img.dtype)
            which = tf.one_hot(tf.random.uniform((), 0, c, dtype=tf.int32), c, dtype=img.dtype)
            img = img * (1.0 - hit * which)
        if lesion_fade > 0:  # the pooling is only paid for the images that are faded
            img = tf.cond((tf.random.uniform(()) < lesion_fade) & tf.reduce_any(msk > 0.5),
                          lambda i=img, m=msk: _fade_lesion(i, m, tf.random.uniform((), 0.0, LESION_FADE_MAX)),
                          lambda i=img: i)
        return img, msk

    if axes or affine is not None or drop_p > 0 or lesion_fade > 0 or patch is not None:
        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def patch_sequence(vols: list[np.ndarray], masks: list[np.ndarray], patch: tuple[int, ...], batch_size: int,
                    steps: int, seed: int, axes: list[int]) -> Any:
    """keras PyDataset of random 3D patches (half centred on a foreground voxel), flipped jointly."""
    import keras

    class Patches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.fg = [np.argwhere(m) for m in masks]

        def __len__(self) -> int:
            return steps

        def _one(self) -> tuple[np.ndarray, np.ndarray]:
            i = int(self.rng.integers(len(vols)))
            v, m = vols[i], masks[i]
            pad = [max(0, p - s) for p, s in zip(patch, m.shape)]
            if any(pad):
                v = np.pad(v, [(0, q) for q in pad] + [(0, 0)], mode="edge")
                m = np.pad(m, [(0, q) for q in pad])
            if len(self.fg[i]) and self.rng.random() < 0.5:
                centre = self.fg[i][int(self.rng.integers(len(self.fg[i])))]
                start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, m.shape)]
            else:
                start = [int(self.rng.integers(0, s - p + 1)) for p, s in zip(patch, m.shape)]
            sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
            xv, mv = v[sl], m[sl]
            for ax in axes:
                if self.rng.random() < 0.5:
                    xv, mv = np.flip(xv, ax), np.flip(mv, ax)
            return xv, mv[..., None].astype(np.float32)

        def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
            pairs = [self._one() for _ in range(batch_size)]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    return Patches()
