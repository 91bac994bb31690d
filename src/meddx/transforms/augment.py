"""2D and 3D augmentation of an image and an optional mask, TorchIO style: random transforms sample,
deterministic twins apply. The one augmentation stack of meddx: classifiers, segmenters and sequence
models all draw from it, and each `--augment` preset means the same transforms for every task.

A sample is (*spatial, C) (2D: (y, x, C); 3D: (z, y, x, C)); a batch is (N, *spatial, C). A mask rides
along as (*spatial) or (*spatial, Cm) (a batch of them with a leading N). Every random transform has
`params = t.sample(rng, shape)` and `t.apply(x, params, mask=None)`, where `apply` is exactly the
deterministic twin `t.twin(params)(x, mask)`: any augmentation can be replayed from its params.
Without a mask a call returns the image; with one it returns (image, mask): spatial transforms move the
mask with the same params, nearest-neighbour (order 0, filled with 0), so a label stays a label;
intensity transforms leave it alone; mask-aware ones read it (RandomCrop centred on the mask,
RandomLesionFade). `Augmenter` applies a list of them to batches, vectorising flips, rot90 and
intensity changes over the batch and warping per sample with scipy.ndimage.

Presets (`--augment`, `PRESETS`): the same list for classification, segmentation and sequences, 2D and 3D

| preset | transforms, in order |
|---|---|
| none | nothing |
| flip | RandomFlip(axes=(-1,), p=0.5): left-right only (up-down and rot90 break anatomy priors) |
| light | flip + RandomAffine(degrees=10, scale=(0.9, 1.1), translation=0.05, p=0.5) |
| strong | flip + RandomAffine(degrees=15, scale=(0.85, 1.15), translation=0.1, p=0.8) + RandomBrightnessContrast(0.1, (0.8, 1.2), p=0.5) + RandomGamma(0.3, p=0.3) + RandomGaussianNoise(0.03, p=0.3) |

Segmentation options append mask-aware transforms to the preset (`Augmenter.from_preset(..., extras=...)`):
`--patch-size N` RandomCrop(N, centre_on_mask_p=0.5), `--channel-dropout P` RandomChannelDropout(P),
`--lesion-fade P` RandomLesionFade(P, max_amount=0.9). `preset_flip_axes` (the axes flip test-time
augmentation may use) is read from the table. Sequences (N, T, *spatial, C) get one draw per sequence,
applied alike to all its frames (`Augmenter.apply_sequences`).

Use inside tf.data (the training loop's job), on batches:
    aug = Augmenter.from_preset("flip", spatial_ndim=2, seed=0)
    ds = ds.batch(128).map(lambda x, y: (aug.as_tf_function()(x), y), num_parallel_calls=1)
    seg = ds.batch(16).map(aug.as_tf_function(), num_parallel_calls=1)  # (images, masks) -> both
(one parallel call keeps the random stream reproducible). The 2D segmentation pipeline applies the params
this module samples with TensorFlow ops instead (`meddx.transforms.augment_tf`: same table, same stream).

The deterministic twins live in `meddx.transforms.twins` (re-exported here). This module stays a little over
500 lines: the random transforms, the preset table and the batch `Augmenter` are one public API.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.transforms._base import Transform, register, transform_from_config
from meddx.transforms.twins import (  # noqa: F401  (re-exported: the twins are part of this API)
    _mask_with_channel,
    _plane,
    _probability,
    _range,
    _restore_mask,
    _sizes,
    Affine,
    BrightnessContrast,
    ChannelDropout,
    Crop,
    Flip,
    Gamma,
    GaussianNoise,
    LesionFade,
    Pair,
    Params,
    Rot90,
    Rotate,
    Twin,
)


# -- random transforms ---------------------------------------------------------------------------

def _writable(a: np.ndarray | None) -> np.ndarray | None:
    """`a` itself when it may be written into, else a copy."""
    return a if (a is None or a.flags.writeable) else a.copy()


class RandomTransform(Transform):
    """Samples the params of a deterministic twin; `apply(x, params, mask)` == `twin(params)(x, mask)`."""

    twin_class: type = Twin
    writes_in_place = True  # `pair_batch` may write into its inputs (the Augmenter then hands it copies)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        """Random params for one sample of `shape` (*spatial, C)."""
        raise NotImplementedError

    def twin(self, params: Params) -> Twin:
        """The deterministic transform these params describe."""
        return self.twin_class(**params)

    def apply(self, x: np.ndarray, params: Params, mask: Any = None) -> Any:
        """Apply sampled params to one sample (and its mask: then (image, mask) is returned)."""
        return self.twin(params)(x, mask)

    def __call__(self, x: np.ndarray, mask: Any = None, rng: np.random.Generator | None = None) -> Any:
        if isinstance(mask, np.random.Generator):  # the older call t(x, rng)
            mask, rng = None, mask
        rng = rng if rng is not None else np.random.default_rng()
        return self.apply(x, self.sample(rng, x.shape), mask)

    def output_shape(self, shape: Sequence[Any], spatial_ndim: int) -> list[Any]:
        """The batch shape (N, *spatial, ...) coming out for `shape` going in (most keep it)."""
        return list(shape)

    # batch versions: subclasses vectorise where they can
    def sample_batch(self, rng: np.random.Generator, shape: Sequence[int]) -> list[Params]:
        """Params for every sample of a batch of `shape` (N, *spatial, C)."""
        return [self.sample(rng, shape[1:]) for _ in range(shape[0])]

    def apply_batch(self, batch: np.ndarray, params: list[Params], masks: Any = None) -> Any:
        """Apply per-sample params to a batch (and masks: then (batch, masks) is returned); the same
        result as `apply` sample by sample."""
        if masks is None:
            return self.pair_batch(batch, params, None)[0]
        m, added = _mask_with_channel(masks, batch.shape[:-1])
        out, mo = self.pair_batch(batch, params, m)
        return out, _restore_mask(mo, added)

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        """(batch, masks) out; masks (N, *spatial, Cm) or None. Default: sample by sample, in place."""
        return self._pairs_into(batch, params, masks, _writable(batch), _writable(masks))

    def _pairs_into(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None, out: np.ndarray,
                    mo: np.ndarray | None) -> Pair:
        """Each sample's twin applied to (image, mask), written into `out` / `mo`."""
        for i, p in enumerate(params):
            xi, mi = self.twin(p).pair(batch[i], None if masks is None else masks[i])
            out[i] = xi
            if mo is not None:
                mo[i] = mi
        return out, mo


@register
class RandomFlip(RandomTransform):
    """Flip each of `axes` (spatial; -1 = x, horizontal) independently with probability `p`."""

    twin_class = Flip
    writes_in_place = False
    _config_keys = ("axes", "p")

    def __init__(self, axes: Sequence[int] = (-1,), p: float = 0.5):
        self.axes = tuple(int(a) for a in axes)
        self.p = float(p)

    def _norm(self, nsp: int) -> list[int]:
        return [a % nsp for a in self.axes]

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        axes = self._norm(len(shape) - 1)
        draw = rng.random(len(axes))
        return {"axes": [a for a, r in zip(axes, draw) if r < self.p]}

    def sample_batch(self, rng: np.random.Generator, shape: Sequence[int]) -> list[Params]:
        axes = self._norm(len(shape) - 2)
        hits = rng.random((shape[0], len(axes))) < self.p
        return [{"axes": [a for a, h in zip(axes, row) if h]} for row in hits.tolist()]

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        out, mo, owned = batch, masks, False  # never write into the caller's arrays
        for a in self._norm(batch.ndim - 2):
            hit = np.fromiter((a in p["axes"] for p in params), bool, len(params))
            if hit.all():
                out = np.flip(out, axis=1 + a)
                mo = None if mo is None else np.flip(mo, axis=1 + a)
            elif hit.any():
                if not owned:
                    out, owned = np.array(out, copy=True), True
                    mo = None if mo is None else np.array(mo, copy=True)
                idx = np.flatnonzero(hit)
                out[idx] = np.flip(out[idx], axis=1 + a)
                if mo is not None:
                    mo[idx] = np.flip(mo[idx], axis=1 + a)
        return out, mo


@register
class RandomRot90(RandomTransform):
    """Rotate by k * 90 degrees (k uniform in 0..3; only 0/2 for non-square planes) with prob. p."""

    twin_class = Rot90
    writes_in_place = False
    _config_keys = ("plane", "p")

    def __init__(self, plane: Sequence[int] | None = None, p: float = 1.0):
        self.plane = None if plane is None else tuple(int(q) for q in plane)
        self.p = float(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        a, b = _plane(self.plane, len(shape) - 1)
        square = shape[a] == shape[b]
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if rng.random() >= self.p:
            k = 0
        return {"k": k, "plane": [a, b]}

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        ks = np.array([p["k"] for p in params])
        if not ks.any():
            return batch, masks
        a, b = params[0]["plane"]
        out = np.array(batch, copy=True)
        mo = None if masks is None else np.array(masks, copy=True)
        for k in (1, 2, 3):
            idx = np.flatnonzero(ks == k)
            if idx.size:
                out[idx] = np.rot90(batch[idx], k, axes=(1 + a, 1 + b))
                if mo is not None:
                    mo[idx] = np.rot90(masks[idx], k, axes=(1 + a, 1 + b))
        return out, mo


@register
class RandomAffine(RandomTransform):
    """Random rotation (+-degrees, in `plane`), isotropic zoom in `scale`, shift up to
    `translation` x size per axis, applied together with probability `p` (one interpolation;
    masks nearest-neighbour)."""

    twin_class = Affine
    _config_keys = ("degrees", "scale", "translation", "plane", "p", "order", "fill")

    def __init__(self, degrees: float | Sequence[float] = 0.0, scale: float | Sequence[float] = (1.0, 1.0),
                 translation: float = 0.0, plane: Sequence[int] | None = None, p: float = 1.0,
                 order: int = 1, fill: float | str = "min"):
        self.degrees = _range(degrees, "degrees")
        self.scale = _range(scale, "scale", symmetric_around=1.0)
        if self.scale[0] <= 0:
            raise ConfigError(f"scale range must be positive, got {list(self.scale)}")
        self.translation = abs(float(translation))
        self.plane = None if plane is None else tuple(int(q) for q in plane)
        self.p = float(p)
        self.order = int(order)
        self.fill = fill

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        nsp = len(shape) - 1
        u = rng.random(2 + nsp)
        apply = rng.random() < self.p
        angle = self.degrees[0] + u[0] * (self.degrees[1] - self.degrees[0])
        scale = self.scale[0] + u[1] * (self.scale[1] - self.scale[0])
        shift = [(2 * u[2 + i] - 1) * self.translation * shape[i] for i in range(nsp)]
        if not apply:
            angle, scale, shift = 0.0, 1.0, [0.0] * nsp
        return {"angle": float(angle), "scale": float(scale), "translation": [float(s) for s in shift],
                "plane": list(_plane(self.plane, nsp)), "order": self.order, "fill": self.fill}


@register
class RandomRotation(RandomAffine):
    """Rotate by an angle uniform in +-`degrees` (or a (low, high) pair) in `plane`."""

    _config_keys = ("degrees", "plane", "p", "order", "fill")

    def __init__(self, degrees: float | Sequence[float] = 10.0, plane: Sequence[int] | None = None,
                 p: float = 1.0, order: int = 1, fill: float | str = "min"):
        super().__init__(degrees=degrees, plane=plane, p=p, order=order, fill=fill)


@register
class RandomScale(RandomAffine):
    """Isotropic zoom by a factor uniform in `range` (low, high); > 1 zooms in."""

    _config_keys = ("range", "p", "order", "fill")

    def __init__(self, range: float | Sequence[float] = (0.9, 1.1), p: float = 1.0,  # noqa: A002
                 order: int = 1, fill: float | str = "min"):
        super().__init__(scale=range, p=p, order=order, fill=fill)
        self.range = self.scale


@register
class RandomTranslation(RandomAffine):
    """Shift each spatial axis by up to +-`fraction` of its size."""

    _config_keys = ("fraction", "p", "order", "fill")

    def __init__(self, fraction: float = 0.1, p: float = 1.0, order: int = 1, fill: float | str = "min"):
        super().__init__(translation=fraction, p=p, order=order, fill=fill)
        self.fraction = self.translation


def _per_sample(values: list[float], batch: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * (batch.ndim - 1))


@register
class RandomBrightnessContrast(RandomTransform):
    """Additive brightness uniform in +-`brightness`, contrast factor uniform in `contrast`."""

    twin_class = BrightnessContrast
    writes_in_place = False
    _config_keys = ("brightness", "contrast", "p")

    def __init__(self, brightness: float | Sequence[float] = 0.1, contrast: float | Sequence[float] = (0.8, 1.2),
                 p: float = 1.0):
        self.brightness = _range(brightness, "brightness")
        self.contrast = _range(contrast, "contrast", symmetric_around=1.0)
        self.p = float(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(3)
        if u[2] >= self.p:
            return {"brightness": 0.0, "contrast": 1.0}
        b = self.brightness[0] + u[0] * (self.brightness[1] - self.brightness[0])
        c = self.contrast[0] + u[1] * (self.contrast[1] - self.contrast[0])
        return {"brightness": float(b), "contrast": float(c)}

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        x = batch.astype(np.float32, copy=False)
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        c = _per_sample([p["contrast"] for p in params], x)
        b = _per_sample([p["brightness"] for p in params], x)
        return (x - mean) * c + mean + b, masks


@register
class RandomGamma(RandomTransform):
    """Gamma = exp(u), u uniform in `log_gamma` (TorchIO's parametrisation)."""

    twin_class = Gamma
    writes_in_place = False
    _config_keys = ("log_gamma", "p")

    def __init__(self, log_gamma: float | Sequence[float] = 0.3, p: float = 1.0):
        self.log_gamma = _range(log_gamma, "log_gamma")
        self.p = float(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(2)
        if u[1] >= self.p:
            return {"gamma": 1.0}
        return {"gamma": float(math.exp(self.log_gamma[0] + u[0] * (self.log_gamma[1] - self.log_gamma[0])))}

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        x = batch.astype(np.float32, copy=False)
        g = _per_sample([p["gamma"] for p in params], x)
        hit = np.flatnonzero(g.ravel() != 1.0)  # only these pay for the power
        if not hit.size:
            return x, masks
        sub, g = x[hit], g[hit]
        axes = tuple(range(1, x.ndim))
        lo, hi = sub.min(axis=axes, keepdims=True), sub.max(axis=axes, keepdims=True)
        span = hi - lo
        unit = (sub - lo) / np.where(span > 0, span, 1)
        out = np.array(x, copy=True)
        out[hit] = np.where(span > 0, unit ** g * span + lo, sub)
        return out, masks


@register
class RandomGaussianNoise(RandomTransform):
    """Add Gaussian noise with std uniform in (0, `std`) (or a (low, high) pair), prob. p."""

    twin_class = GaussianNoise
    _config_keys = ("std", "p")

    def __init__(self, std: float | Sequence[float] = 0.05, p: float = 1.0):
        self.std = (0.0, abs(float(std))) if np.isscalar(std) else _range(std, "std", None)
        self.p = float(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(2)
        seed = int(rng.integers(2**31 - 1))
        std = self.std[0] + u[0] * (self.std[1] - self.std[0]) if u[1] < self.p else 0.0
        return {"std": float(std), "seed": seed}


# -- mask-aware transforms (the segmentation options) --------------------------------------------

@register
class RandomCrop(RandomTransform):
    """A `size` window (one int: every spatial axis) placed uniformly; with probability
    `centre_on_mask_p`, when the mask has foreground, centred on a random foreground voxel instead."""

    twin_class = Crop
    writes_in_place = False
    _config_keys = ("size", "centre_on_mask_p")

    def __init__(self, size: int | Sequence[int], centre_on_mask_p: float = 0.0):
        self.size = int(size) if np.isscalar(size) else tuple(int(s) for s in size)
        _sizes(self.size, 1 if np.isscalar(size) else len(self.size))
        self.centre_on_mask_p = _probability(centre_on_mask_p, "centre_on_mask_p")

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        nsp = len(shape) - 1
        u = rng.random(2 + nsp)
        return {"size": list(_sizes(self.size, nsp)), "start": [float(v) for v in u[2:]],
                "centre_on_mask": bool(u[0] < self.centre_on_mask_p), "pick": float(u[1])}

    def output_shape(self, shape: Sequence[Any], spatial_ndim: int) -> list[Any]:
        return [shape[0], *_sizes(self.size, spatial_ndim), *shape[1 + spatial_ndim:]]

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        nsp = batch.ndim - 2
        sizes = _sizes(self.size, nsp)
        out = np.empty((len(batch), *sizes, batch.shape[-1]), batch.dtype)
        mo = None if masks is None else np.empty((len(masks), *sizes, masks.shape[-1]), masks.dtype)
        return self._pairs_into(batch, params, masks, out, mo)


@register
class RandomChannelDropout(RandomTransform):
    """With probability `p` zero one input channel, chosen uniformly (single-channel input: never)."""

    twin_class = ChannelDropout
    _config_keys = ("p",)

    def __init__(self, p: float = 0.5):
        self.p = _probability(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(2)
        hit = shape[-1] > 1 and u[0] < self.p
        return {"channel": min(int(u[1] * shape[-1]), shape[-1] - 1) if hit else None}

    def pair_batch(self, batch: np.ndarray, params: list[Params], masks: np.ndarray | None) -> Pair:
        hits = [(i, p["channel"]) for i, p in enumerate(params) if p["channel"] is not None]
        if not hits:
            return batch, masks
        out = _writable(batch.astype(np.float32, copy=False))
        rows, chans = (np.asarray(v) for v in zip(*hits))
        out[rows, ..., chans] = 0.0
        return out, masks


@register
class RandomLesionFade(RandomTransform):
    """With probability `p` cut the lesion's contrast to the tissue around it by a fraction uniform in
    [0, `max_amount`] (LesionFade: needs the mask; images without one or without lesion are kept)."""

    twin_class = LesionFade
    _config_keys = ("p", "max_amount")

    def __init__(self, p: float = 0.5, max_amount: float = 0.9):
        self.p = _probability(p)
        self.max_amount = _probability(max_amount, "max_amount")

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(2)
        return {"amount": float(u[1] * self.max_amount) if u[0] < self.p else 0.0}


# -- the presets: one table for every task ---------------------------------------------------------

_FLIP = {"class": "RandomFlip", "axes": [-1], "p": 0.5}  # left-right only: up-down/rot90 break anatomy priors

#: `--augment` name -> the random transforms it applies, in order, as configs (see the module docstring's
#: table). The same for classification, segmentation and sequences, 2D and 3D; "flip" measured best for
#: 28 px MedMNIST-size images and for the LGG segmenter.
PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    "none": (),
    "flip": (_FLIP,),
    "light": (_FLIP, {"class": "RandomAffine", "degrees": 10, "scale": [0.9, 1.1], "translation": 0.05, "p": 0.5}),
    "strong": (_FLIP,
               {"class": "RandomAffine", "degrees": 15, "scale": [0.85, 1.15], "translation": 0.1, "p": 0.8},
               {"class": "RandomBrightnessContrast", "brightness": 0.1, "contrast": [0.8, 1.2], "p": 0.5},
               {"class": "RandomGamma", "log_gamma": 0.3, "p": 0.3},
               {"class": "RandomGaussianNoise", "std": 0.03, "p": 0.3}),
}

#: The `--augment` choices.
AUGMENT_PRESETS = tuple(PRESETS)


def preset_transforms(name: str) -> list[RandomTransform]:
    """Fresh random transforms of preset `name` (ConfigError for an unknown name)."""
    key = str(name).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    return [transform_from_config(dict(cfg)) for cfg in PRESETS[key]]


def preset_flip_axes(name: str, spatial_ndim: int) -> list[int]:
    """The spatial axes (0-based, of one sample) that preset `name` may flip, read from `PRESETS`."""
    axes = {a % int(spatial_ndim) for t in preset_transforms(name) if isinstance(t, RandomFlip) for a in t.axes}
    return sorted(axes)


# -- the batch augmenter -------------------------------------------------------------------------

@register
class Augmenter(Transform):
    """Apply random transforms to batches (N, *spatial, C) and optional masks, reproducibly from `seed`.

    Each call advances one numpy Generator, so two Augmenters with the same seed produce the
    same sequence of batches. `sample(shape)` + `apply(batch, params, mask)` replays a call.
    """

    _config_keys = ("transforms", "seed", "spatial_ndim")

    def __init__(self, transforms: Sequence[Any] = (), seed: int | None = None, spatial_ndim: int | None = None):
        self.transforms = [t if isinstance(t, RandomTransform) else transform_from_config(t) for t in transforms]
        for t in self.transforms:
            if not isinstance(t, RandomTransform):
                raise ConfigError(f"Augmenter takes random transforms, got {type(t).__name__}")
        self.seed = None if seed is None else int(seed)
        if spatial_ndim is not None and int(spatial_ndim) not in (2, 3):
            raise ConfigError(f"spatial_ndim must be 2 or 3, got {spatial_ndim}")
        self.spatial_ndim = None if spatial_ndim is None else int(spatial_ndim)
        self.reset()

    @classmethod
    def from_preset(cls, name: str, spatial_ndim: int = 2, seed: int | None = None,
                    extras: Sequence[RandomTransform] = ()) -> "Augmenter":
        """The transforms of `PRESETS[name]`, then `extras` (e.g. segmentation's mask-aware ones)."""
        return cls([*preset_transforms(name), *extras], seed=seed, spatial_ndim=spatial_ndim)

    def reset(self, seed: int | None = None) -> None:
        """Restart the random stream (from `seed` if given, else the constructor's seed)."""
        if seed is not None:
            self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def _check(self, batch: Any) -> np.ndarray:
        x = np.asarray(batch)
        want = (self.spatial_ndim + 2,) if self.spatial_ndim else (4, 5)
        if x.ndim not in want:
            what = f"{self.spatial_ndim}D" if self.spatial_ndim else "2D or 3D"
            raise InputError(f"augmentation expects a batch (N, *spatial, C) of {what} samples, "
                             f"got shape {tuple(x.shape)}")
        return x if x.dtype == np.float32 else x.astype(np.float32)

    def sample(self, batch_shape: Sequence[int], rng: np.random.Generator | None = None) -> list[list[Params]]:
        """Per transform, per sample params for a batch of `batch_shape` (masks do not change them)."""
        rng = self._rng if rng is None else rng
        params, shape = [], tuple(batch_shape)
        for t in self.transforms:
            params.append(t.sample_batch(rng, shape))
            shape = tuple(t.output_shape(shape, len(shape) - 2))
        return params

    def apply(self, batch: Any, params: list[list[Params]], mask: Any = None) -> Any:
        """Deterministically apply params from `sample` (replay); with a mask, (batch, mask) out."""
        x = self._check(batch)
        m, added = (None, False) if mask is None else _mask_with_channel(mask, x.shape[:-1])
        owned = False
        for t, p in zip(self.transforms, params):
            if not owned and t.writes_in_place:  # never write into the caller's arrays
                x = np.array(x, copy=True)
                m = None if m is None else np.array(m, copy=True)
                owned = True
            x, m = t.pair_batch(x, p, m)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if mask is None:
            return x
        return x, _restore_mask(np.ascontiguousarray(m), added)

    def __call__(self, batch: Any, mask: Any = None, rng: np.random.Generator | None = None) -> Any:
        if isinstance(mask, np.random.Generator):  # the older call aug(batch, rng)
            mask, rng = None, mask
        x = self._check(batch)
        return self.apply(x, self.sample(x.shape, rng), mask)

    def apply_sequences(self, batch: Any, mask: Any = None, rng: np.random.Generator | None = None) -> Any:
        """Batches of sequences (N, T, *spatial, C) (masks (N, T, *spatial[, Cm])): one draw per sequence,
        applied alike to each of its T frames, so a clip's frames or a stack's slices move together. Padding
        frames (exactly all 0, as `meddx.data.sequences.pad_sequences` writes them) stay all 0, so the sequence
        models still mask them out."""
        seq = np.asarray(batch)
        if seq.ndim < 3:
            raise InputError(f"expected sequences (N, T, *spatial, C), got shape {tuple(seq.shape)}")
        n, t = seq.shape[:2]
        flat = self._check(seq.reshape(n * t, *seq.shape[2:]))
        padding = ~flat.reshape(n * t, -1).any(axis=1)
        params = [[p for p in per_seq for _ in range(t)] for per_seq in self.sample((n, *flat.shape[1:]), rng)]
        masks = None if mask is None else np.asarray(mask).reshape(n * t, *np.shape(mask)[2:])
        out = self.apply(flat, params, masks)
        images = out if mask is None else out[0]
        if padding.any():
            images[padding] = 0
        if mask is None:
            return images.reshape(n, t, *images.shape[1:])
        return images.reshape(n, t, *images.shape[1:]), out[1].reshape(n, t, *out[1].shape[1:])

    def output_shape(self, batch_shape: Sequence[Any], spatial_ndim: int | None = None) -> list[Any]:
        """The shape of a batch (or mask batch) coming out for `batch_shape` going in."""
        nsp = int(spatial_ndim or self.spatial_ndim or len(batch_shape) - 2)
        shape = list(batch_shape)
        for t in self.transforms:
            shape = t.output_shape(shape, nsp)
        return shape

    def get_config(self) -> dict[str, Any]:
        return {"class": "Augmenter", "transforms": [t.get_config() for t in self.transforms],
                "seed": self.seed, "spatial_ndim": self.spatial_ndim}

    def as_tf_function(self, sequences: bool = False) -> Any:
        """A function tf.Tensor batch [, masks] -> augmented float32 batch [, masks], via tf.numpy_function.

        Imports TensorFlow only when called. Map it over *batched* datasets; keep
        num_parallel_calls=1 if the augmentation stream must be reproducible. Masks keep their dtype.
        `sequences`: batches are (N, T, *spatial, C) and each sequence's frames move alike
        (`apply_sequences`).
        """
        import tensorflow as tf

        call = self.apply_sequences if sequences else self
        lead = 2 if sequences else 1  # leading non-spatial axes: (N,) or (N, T)

        def shape_of(t: Any, nsp: int) -> list[Any]:
            dims = t.shape.as_list()
            return dims[:lead - 1] + self.output_shape(dims[lead - 1:], nsp)

        def _np(batch: np.ndarray) -> np.ndarray:
            return call(batch)

        def _np_pair(batch: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return call(batch, masks)

        @tf.autograph.experimental.do_not_convert
        def augment(images: Any, masks: Any = None) -> Any:
            nsp = len(images.shape) - lead - 1
            if masks is None:
                out = tf.numpy_function(_np, [images], tf.float32, stateful=True, name="meddx_augment")
                out.set_shape(shape_of(images, nsp))
                return out
            out, mo = tf.numpy_function(_np_pair, [images, masks], [tf.float32, masks.dtype], stateful=True,
                                        name="meddx_augment_pair")
            out.set_shape(shape_of(images, nsp))
            mo.set_shape(shape_of(masks, nsp))
            return out, mo

        return augment
