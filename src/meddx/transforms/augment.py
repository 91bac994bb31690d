"""2D and 3D data augmentation, TorchIO style: random transforms sample, deterministic twins apply.

A sample is (*spatial, C) (2D: (y, x, C); 3D: (z, y, x, C)); a batch is (N, *spatial, C).
Every random transform has `params = t.sample(rng, shape)` and `t.apply(x, params)`, where
`apply` is exactly the deterministic twin `t.twin(params)(x)`: any augmentation can be
replayed from its params. `Augmenter` applies a list of them to batches, vectorising flips,
rot90 and intensity changes over the batch and warping per sample with scipy.ndimage.

Use inside tf.data (the training loop's job), on batches:
    aug = Augmenter.from_preset("flip", spatial_ndim=2, seed=0)
    ds = ds.batch(128).map(lambda x, y: (aug.as_tf_function()(x), y), num_parallel_calls=1)
(one parallel call keeps the random stream reproducible; the numpy code holds the GIL anyway).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.transforms._base import Transform, register, transform_from_config

def _ndimage():  # scipy.ndimage costs ~0.5 s to import: only load it when a warp is needed
    from scipy import ndimage

    return ndimage


__all__ = [
    "Flip", "Rot90", "Affine", "Rotate", "BrightnessContrast", "Gamma", "GaussianNoise",
    "RandomTransform", "RandomFlip", "RandomRot90", "RandomAffine", "RandomRotation", "RandomScale",
    "RandomTranslation", "RandomBrightnessContrast", "RandomGaussianNoise", "RandomGamma",
    "Augmenter", "AUGMENT_PRESETS",
]

Params = dict[str, Any]


def _range(value: float | Sequence[float], name: str, symmetric_around: float | None = 0.0) -> tuple[float, float]:
    """A number d -> (c - d, c + d) around `symmetric_around`; a pair -> itself (checked)."""
    if np.isscalar(value):
        if symmetric_around is None:
            raise ConfigError(f"{name} needs a (low, high) pair, got {value!r}")
        v = abs(float(value))
        return (symmetric_around - v, symmetric_around + v)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ConfigError(f"{name} range must be (low, high) with low <= high, got {[lo, hi]}")
    return (lo, hi)


def _plane(plane: Sequence[int] | None, nsp: int) -> tuple[int, int]:
    """The rotation plane as two non-negative spatial axes; default: the last two (y, x)."""
    if plane is None:
        return (nsp - 2, nsp - 1)
    a, b = (int(p) % nsp for p in plane)
    if a == b:
        raise ConfigError(f"rotation plane needs two different axes, got {list(plane)}")
    return (a, b)


def _check_sample(x: np.ndarray) -> int:
    if x.ndim not in (3, 4):
        raise InputError(f"augmentation expects one sample (*spatial, C) with 2 or 3 spatial axes, "
                         f"got shape {tuple(x.shape)}")
    return x.ndim - 1


# -- deterministic twins (operate on one sample (*spatial, C)) ----------------------------------

@register
class Flip(Transform):
    """Reverse the given spatial axes (0 = first spatial axis; -1 = x, the horizontal one)."""

    _config_keys = ("axes",)

    def __init__(self, axes: Sequence[int] = (-1,)):
        self.axes = tuple(int(a) for a in axes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        nsp = _check_sample(x)
        if not self.axes:
            return x
        return np.flip(x, axis=tuple(a % nsp for a in self.axes))


@register
class Rot90(Transform):
    """np.rot90 by k quarter turns in a plane of spatial axes (default the last two)."""

    _config_keys = ("k", "plane")

    def __init__(self, k: int = 1, plane: Sequence[int] | None = None):
        self.k = int(k) % 4
        self.plane = None if plane is None else tuple(int(p) for p in plane)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        nsp = _check_sample(x)
        if self.k == 0:
            return x
        return np.rot90(x, self.k, axes=_plane(self.plane, nsp))


@register
class Affine(Transform):
    """Rotate by `angle` degrees in `plane`, zoom by `scale`, shift by `translation` voxels.

    About the array centre; `angle` > 0 turns like np.rot90 (counter-clockwise as displayed).
    scale > 1 zooms in. fill: "min" (each channel's minimum), "nearest", or a number.
    """

    _config_keys = ("angle", "scale", "translation", "plane", "order", "fill")

    def __init__(self, angle: float = 0.0, scale: float | Sequence[float] = 1.0,
                 translation: Sequence[float] | None = None, plane: Sequence[int] | None = None,
                 order: int = 1, fill: float | str = "min"):
        self.angle = float(angle)
        self.scale = float(scale) if np.isscalar(scale) else tuple(float(s) for s in scale)
        self.translation = None if translation is None else tuple(float(t) for t in translation)
        self.plane = None if plane is None else tuple(int(p) for p in plane)
        self.order = int(order)
        if isinstance(fill, str) and fill not in ("min", "nearest"):
            raise ConfigError(f"fill must be 'min', 'nearest' or a number, got {fill!r}")
        self.fill = fill if isinstance(fill, str) else float(fill)

    def is_identity(self, nsp: int) -> bool:
        scales = (self.scale,) if isinstance(self.scale, float) else self.scale
        return (self.angle % 360 == 0 and all(s == 1.0 for s in scales)
                and not any(self.translation or ()))

    def matrix(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(M, offset) for scipy.ndimage.affine_transform: input = M @ output + offset."""
        nsp = len(shape)
        a, b = _plane(self.plane, nsp)
        rot = np.eye(nsp)
        th = math.radians(self.angle)
        c, s = math.cos(th), math.sin(th)
        rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, s, -s, c
        scale = np.full(nsp, self.scale) if isinstance(self.scale, float) else np.asarray(self.scale, float)
        m = rot / scale[None, :]
        snapped = np.round(m)
        near = np.abs(m - snapped) < 1e-9
        m[near] = snapped[near]  # exact quarter turns stay exact
        centre = (np.asarray(shape, float) - 1.0) / 2.0
        t = np.zeros(nsp) if self.translation is None else np.asarray(self.translation, float)
        offset = centre - m @ (centre + t)
        return m, offset

    def __call__(self, x: np.ndarray) -> np.ndarray:
        nsp = _check_sample(x)
        if self.is_identity(nsp):
            return x
        src = x if x.dtype.kind == "f" else x.astype(np.float32)
        m, offset = self.matrix(src.shape[:nsp])
        out = np.empty_like(src)
        for ch in range(src.shape[-1]):
            plane = src[..., ch]
            if self.fill == "nearest":
                mode, cval = "nearest", 0.0
            else:
                mode, cval = "constant", float(plane.min()) if self.fill == "min" else self.fill
            _ndimage().affine_transform(plane, m, offset=offset, output=out[..., ch], order=self.order,
                                     mode=mode, cval=cval, prefilter=self.order > 1)
        return out


@register
class Rotate(Affine):
    """Rotate by `angle` degrees in `plane` (the Affine twin with only a rotation)."""

    _config_keys = ("angle", "plane", "order", "fill")

    def __init__(self, angle: float, plane: Sequence[int] | None = None, order: int = 1, fill: float | str = "min"):
        super().__init__(angle=angle, plane=plane, order=order, fill=fill)


def _sample_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))  # spatial + channel axes of one sample


@register
class BrightnessContrast(Transform):
    """out = (x - mean) * contrast + mean + brightness (mean over the sample)."""

    _config_keys = ("brightness", "contrast")

    def __init__(self, brightness: float = 0.0, contrast: float = 1.0):
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _check_sample(x)
        x = x.astype(np.float32, copy=False)
        mean = x.mean(dtype=np.float64)
        return ((x - mean) * self.contrast + mean + self.brightness).astype(np.float32)


@register
class Gamma(Transform):
    """Gamma on the sample rescaled to [0, 1] by its min/max, then scaled back (works on z-scores)."""

    _config_keys = ("gamma",)

    def __init__(self, gamma: float = 1.0):
        if float(gamma) <= 0:
            raise ConfigError(f"gamma must be positive, got {gamma}")
        self.gamma = float(gamma)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _check_sample(x)
        x = x.astype(np.float32, copy=False)
        lo, hi = float(x.min()), float(x.max())
        if self.gamma == 1.0 or hi <= lo:
            return x
        return (((x - lo) / (hi - lo)) ** self.gamma * (hi - lo) + lo).astype(np.float32)


@register
class GaussianNoise(Transform):
    """Add N(0, std^2) noise drawn from a generator seeded with `seed` (so it replays exactly)."""

    _config_keys = ("std", "seed")

    def __init__(self, std: float = 0.0, seed: int = 0):
        self.std = float(std)
        self.seed = int(seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _check_sample(x)
        x = x.astype(np.float32, copy=False)
        if self.std == 0:
            return x
        noise = np.random.default_rng(self.seed).standard_normal(x.shape, dtype=np.float32)
        return x + np.float32(self.std) * noise


# -- random transforms ---------------------------------------------------------------------------

class RandomTransform(Transform):
    """Samples the params of a deterministic twin; `apply(x, params)` == `twin(params)(x)`."""

    twin_class: type = Transform

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        """Random params for one sample of `shape` (*spatial, C)."""
        raise NotImplementedError

    def twin(self, params: Params) -> Transform:
        """The deterministic transform these params describe."""
        return self.twin_class(**params)

    def apply(self, x: np.ndarray, params: Params) -> np.ndarray:
        """Apply sampled params to one sample (deterministic)."""
        return self.twin(params)(x)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        return self.apply(x, self.sample(rng, x.shape))

    # batch versions: subclasses vectorise where they can
    def sample_batch(self, rng: np.random.Generator, shape: Sequence[int]) -> list[Params]:
        """Params for every sample of a batch of `shape` (N, *spatial, C)."""
        return [self.sample(rng, shape[1:]) for _ in range(shape[0])]

    def apply_batch(self, batch: np.ndarray, params: list[Params]) -> np.ndarray:
        """Apply per-sample params to a batch; same result as `apply` sample by sample."""
        out = batch if batch.flags.writeable else batch.copy()
        for i, p in enumerate(params):
            out[i] = self.apply(batch[i], p)
        return out


@register
class RandomFlip(RandomTransform):
    """Flip each of `axes` (spatial; -1 = x, horizontal) independently with probability `p`."""

    twin_class = Flip
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

    def apply_batch(self, batch: np.ndarray, params: list[Params]) -> np.ndarray:
        out, owned = batch, False  # never write into the caller's array
        for a in self._norm(batch.ndim - 2):
            mask = np.fromiter((a in p["axes"] for p in params), bool, len(params))
            if mask.all():
                out = np.flip(out, axis=1 + a)
            elif mask.any():
                if not owned:
                    out, owned = np.array(out, copy=True), True
                idx = np.flatnonzero(mask)
                out[idx] = np.flip(out[idx], axis=1 + a)
        return out


@register
class RandomRot90(RandomTransform):
    """Rotate by k * 90 degrees (k uniform in 0..3; only 0/2 for non-square planes) with prob. p."""

    twin_class = Rot90
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

    def apply_batch(self, batch: np.ndarray, params: list[Params]) -> np.ndarray:
        ks = np.array([p["k"] for p in params])
        if not ks.any():
            return batch
        a, b = params[0]["plane"]
        out = np.array(batch, copy=True)
        for k in (1, 2, 3):
            idx = np.flatnonzero(ks == k)
            if idx.size:
                out[idx] = np.rot90(batch[idx], k, axes=(1 + a, 1 + b))
        return out


@register
class RandomAffine(RandomTransform):
    """Random rotation (+-degrees, in `plane`), isotropic zoom in `scale`, shift up to
    `translation` x size per axis, applied together with probability `p` (one interpolation)."""

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

    def apply_batch(self, batch: np.ndarray, params: list[Params]) -> np.ndarray:
        x = batch.astype(np.float32, copy=False)
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        c = _per_sample([p["contrast"] for p in params], x)
        b = _per_sample([p["brightness"] for p in params], x)
        return (x - mean) * c + mean + b


@register
class RandomGamma(RandomTransform):
    """Gamma = exp(u), u uniform in `log_gamma` (TorchIO's parametrisation)."""

    twin_class = Gamma
    _config_keys = ("log_gamma", "p")

    def __init__(self, log_gamma: float | Sequence[float] = 0.3, p: float = 1.0):
        self.log_gamma = _range(log_gamma, "log_gamma")
        self.p = float(p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> Params:
        u = rng.random(2)
        if u[1] >= self.p:
            return {"gamma": 1.0}
        return {"gamma": float(math.exp(self.log_gamma[0] + u[0] * (self.log_gamma[1] - self.log_gamma[0])))}

    def apply_batch(self, batch: np.ndarray, params: list[Params]) -> np.ndarray:
        x = batch.astype(np.float32, copy=False)
        axes = tuple(range(1, x.ndim))
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        g = _per_sample([p["gamma"] for p in params], x)
        span = hi - lo
        ok = (span > 0) & (g != 1.0)
        unit = (x - lo) / np.where(span > 0, span, 1)
        return np.where(ok, unit ** g * span + lo, x).astype(np.float32)


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


# -- the batch augmenter -------------------------------------------------------------------------

def _preset_transforms(name: str, spatial_ndim: int) -> list[RandomTransform]:
    flip = RandomFlip(axes=(-1,), p=0.5)  # left-right only: up-down/rot90 break anatomy priors
    if name == "none":
        return []
    if name == "flip":
        return [flip]
    if name == "light":
        return [flip, RandomAffine(degrees=10, scale=(0.9, 1.1), translation=0.05, p=0.5)]
    if name == "strong":
        return [flip,
                RandomAffine(degrees=15, scale=(0.85, 1.15), translation=0.1, p=0.8),
                RandomBrightnessContrast(brightness=0.1, contrast=(0.8, 1.2), p=0.5),
                RandomGamma(log_gamma=0.3, p=0.3),
                RandomGaussianNoise(std=0.03, p=0.3)]
    raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENT_PRESETS)}")


#: Named augmentation recipes; "flip" measured best for 28 px MedMNIST-size images.
AUGMENT_PRESETS = ("none", "flip", "light", "strong")


@register
class Augmenter(Transform):
    """Apply random transforms to batches (N, *spatial, C), reproducibly from `seed`.

    Each call advances one numpy Generator, so two Augmenters with the same seed produce the
    same sequence of batches. `sample(shape)` + `apply(batch, params)` replays a call.
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
    def from_preset(cls, name: str, spatial_ndim: int = 2, seed: int | None = None) -> "Augmenter":
        """'none' | 'flip' (horizontal flips) | 'light' (+ small affine) | 'strong' (+ intensity, noise)."""
        return cls(_preset_transforms(str(name).lower(), int(spatial_ndim)), seed=seed, spatial_ndim=spatial_ndim)

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
        """Per transform, per sample params for a batch of `batch_shape`."""
        rng = self._rng if rng is None else rng
        return [t.sample_batch(rng, tuple(batch_shape)) for t in self.transforms]

    def apply(self, batch: Any, params: list[list[Params]]) -> np.ndarray:
        """Deterministically apply params from `sample` (replay)."""
        x = self._check(batch)
        owned = False
        for t, p in zip(self.transforms, params):
            if not owned and not isinstance(t, RandomFlip):
                x = np.array(x, copy=True)  # transforms may write in place: never into the caller's array
                owned = True
            x = t.apply_batch(x, p)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, batch: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        x = self._check(batch)
        return self.apply(x, self.sample(x.shape, rng))

    def get_config(self) -> dict[str, Any]:
        return {"class": "Augmenter", "transforms": [t.get_config() for t in self.transforms],
                "seed": self.seed, "spatial_ndim": self.spatial_ndim}

    def as_tf_function(self) -> Any:
        """A function tf.Tensor batch -> augmented float32 tf.Tensor, via tf.numpy_function.

        Imports TensorFlow only when called. Map it over *batched* datasets; keep
        num_parallel_calls=1 if the augmentation stream must be reproducible.
        """
        import tensorflow as tf

        def _np(batch: np.ndarray) -> np.ndarray:
            return self(batch)

        @tf.autograph.experimental.do_not_convert
        def augment(images: Any) -> Any:
            out = tf.numpy_function(_np, [images], tf.float32, stateful=True, name="meddx_augment")
            out.set_shape(images.shape)
            return out

        return augment
