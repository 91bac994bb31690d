"""Training input pipelines of the segmenters, on the one augmentation stack (`meddx.transforms.augment`):
2D in-memory tf.data batches and 3D random patches (half centred on foreground) as a keras PyDataset.
Image and mask go through the same seeded `Augmenter` (the `--augment` preset, then the segmentation
options as mask-aware transforms), so a run's augmentation replays from its seed."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from meddx.transforms import augment_tf
from meddx.transforms.augment import (
    Augmenter,
    RandomChannelDropout,
    RandomCrop,
    RandomLesionFade,
    RandomTransform,
    preset_flip_axes,
)

logger = logging.getLogger(__name__)

LESION_FADE_MAX = 0.9  # --lesion-fade cuts a lesion's contrast by a random fraction up to this
CROP_ON_LESION_P = 0.5  # --patch-size: the share of crops centred on a lesion voxel (when there is one)


def flip_axes(augment: str, ndim: int) -> list[int]:
    """Spatial axes (of one sample) the preset flips at random, from the preset table (TTA uses them)."""
    return preset_flip_axes(augment, ndim)


def segmentation_extras(channel_dropout: float = 0.0, lesion_fade: float = 0.0,
                        patch: int | None = None) -> list[RandomTransform]:
    """The segmentation options as mask-aware random transforms, in the order they apply."""
    extras: list[RandomTransform] = []
    if patch:  # before the fade: its box filters then run on the crop, not the whole image
        extras.append(RandomCrop(int(patch), centre_on_mask_p=CROP_ON_LESION_P))
    if channel_dropout > 0:
        extras.append(RandomChannelDropout(channel_dropout))
    if lesion_fade > 0:
        extras.append(RandomLesionFade(lesion_fade, max_amount=LESION_FADE_MAX))
    return extras


def segmentation_augmenter(augment: str, spatial_ndim: int, seed: int, channel_dropout: float = 0.0,
                           lesion_fade: float = 0.0, patch: int | None = None) -> Augmenter | None:
    """The preset's Augmenter plus the segmentation options, seeded; None when it would do nothing."""
    aug = Augmenter.from_preset(augment, spatial_ndim, seed=seed,
                                extras=segmentation_extras(channel_dropout, lesion_fade, patch))
    return aug if aug.transforms else None


def tf_dataset_2d(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: str = "flip",
                  channel_dropout: float = 0.0, lesion_fade: float = 0.0, patch: int | None = None,
                  graph: bool = True) -> Any:
    """Shuffled batches of (image, mask), augmented by `segmentation_augmenter` (same params for both).

    `channel_dropout` p: one channel chosen at random is zeroed with probability p (several channels only),
    so the network cannot rely on a single sequence. `lesion_fade` p: the labelled lesion's contrast to its
    surroundings is cut by a random 0-90 % with probability p, so a network trained on conspicuous lesions
    also sees faint ones. `patch`: (patch, patch) crops after the preset's transforms, half of a lesion
    slice's crops centred on lesion. The Augmenter draws every param (seeded); `graph` applies them in
    TensorFlow ops (`meddx.transforms.augment_tf`, about 2x cheaper per image than scipy's warps), else
    the numpy twins apply them through tf.numpy_function.
    """
    import tensorflow as tf

    aug = segmentation_augmenter(augment, 2, seed, channel_dropout, lesion_fade, patch)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if aug is not None:
        logger.debug("2D segmentation augmentation (%s): %s", "graph" if graph else "numpy", aug.get_config())
        if graph and augment_tf.supports(aug, 2):
            ds = augment_tf.map_augment(ds, aug)
        else:
            ds = ds.map(aug.as_tf_function(), num_parallel_calls=1, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _pad_to(v: np.ndarray, m: np.ndarray, patch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pad a volume (edge values) and its mask (zeros) up to at least `patch` on every spatial axis."""
    pad = [max(0, p - s) for p, s in zip(patch, m.shape)]
    if not any(pad):
        return v, m
    return np.pad(v, [(0, q) for q in pad] + [(0, 0)], mode="edge"), np.pad(m, [(0, q) for q in pad])


def patch_sequence(vols: list[np.ndarray], masks: list[np.ndarray], patch: tuple[int, ...], batch_size: int,
                   steps: int, seed: int, augment: str = "flip") -> Any:
    """keras PyDataset of random 3D patches (half centred on a foreground voxel), augmented with the
    preset's transforms, image and mask alike; one seeded stream."""
    import keras

    crop = RandomCrop(tuple(int(p) for p in patch), centre_on_mask_p=CROP_ON_LESION_P)
    aug = segmentation_augmenter(augment, 3, seed)

    class Patches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)

        def __len__(self) -> int:
            return steps

        def _one(self) -> tuple[np.ndarray, np.ndarray]:
            i = int(self.rng.integers(len(vols)))
            v, m = _pad_to(vols[i], masks[i], patch)
            return crop(v, m, rng=self.rng)

        def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
            pairs = [self._one() for _ in range(batch_size)]
            xb = np.stack([p[0] for p in pairs]).astype(np.float32, copy=False)
            mb = np.stack([p[1] for p in pairs])[..., None].astype(np.float32)
            return (xb, mb) if aug is None else aug(xb, mb, rng=self.rng)

    return Patches()
