"""Deterministic twins of meddx's augmentations: each applies fixed parameters to one sample (*spatial, C) and
its optional mask (spatial transforms move the mask nearest-neighbour, intensity transforms leave it alone).
The random transforms in `meddx.transforms.augment` sample parameters and delegate here, so any augmentation
can be replayed. (Split from augment.py to keep each module under ~500 lines.)"""

from __future__ import annotations

import math
from typing import Any, Sequence
import numpy as np
from meddx.errors import ConfigError, InputError
from meddx.transforms._base import Transform, register


def _ndimage():  # scipy.ndimage costs ~0.5 s to import: only load it when a warp is needed
    from scipy import ndimage

    return ndimage


__all__ = [
    "Twin", "Flip", "Rot90", "Affine", "Rotate", "BrightnessContrast", "Gamma", "GaussianNoise", "Crop",
    "ChannelDropout", "LesionFade",
]

Params = dict[str, Any]
Pair = tuple[np.ndarray, "np.ndarray | None"]


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


def _probability(p: float, name: str = "p") -> float:
    """`p` as a float in [0, 1] (ConfigError otherwise)."""
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)


def _plane(plane: Sequence[int] | None, nsp: int) -> tuple[int, int]:
    """The rotation plane as two non-negative spatial axes; default: the last two (y, x)."""
    if plane is None:
        return (nsp - 2, nsp - 1)
    a, b = (int(p) % nsp for p in plane)
    if a == b:
        raise ConfigError(f"rotation plane needs two different axes, got {list(plane)}")
    return (a, b)


def _check_sample(x: np.ndarray) -> int:
    """The number of spatial axes of one sample (*spatial, C); InputError for other shapes."""
    if x.ndim not in (3, 4):
        raise InputError(f"augmentation expects one sample (*spatial, C) with 2 or 3 spatial axes, "
                         f"got shape {tuple(x.shape)}")
    return x.ndim - 1


def _mask_with_channel(mask: Any, spatial: Sequence[int]) -> tuple[np.ndarray, bool]:
    """(mask with a trailing channel axis, whether one was added) for a mask of image shape `spatial`
    (*spatial for a sample; N, *spatial for a batch)."""
    m = np.asarray(mask)
    spatial = tuple(spatial)
    if m.shape == spatial:
        return m[..., None], True
    if m.ndim == len(spatial) + 1 and m.shape[:-1] == spatial:
        return m, False
    raise InputError(f"mask of shape {tuple(m.shape)} does not match the image's spatial shape {spatial}")


def _restore_mask(m: np.ndarray | None, added: bool) -> np.ndarray | None:
    """Undo `_mask_with_channel`'s added channel axis."""
    return m[..., 0] if (m is not None and added) else m


def _foreground(mask: np.ndarray) -> np.ndarray:
    """Foreground (any channel > 0.5) of a mask with a channel axis, without that axis."""
    return (mask > 0.5).any(axis=-1)


# -- deterministic twins (operate on one sample (*spatial, C) and its optional mask) -------------

class Twin(Transform):
    """A deterministic augmentation: `t(x)` -> x'; `t(x, mask)` -> (x', mask') with the mask moved alike."""

    def __call__(self, x: np.ndarray, mask: Any = None) -> Any:
        nsp = _check_sample(x)
        if mask is None:
            return self.pair(x, None)[0]
        m, added = _mask_with_channel(mask, x.shape[:nsp])
        out, mo = self.pair(x, m)
        return out, _restore_mask(mo, added)

    def pair(self, x: np.ndarray, mask: np.ndarray | None) -> Pair:
        """(image, mask) out for one sample and its mask (with a channel axis) or None."""
        return self.image(x), (None if mask is None else self.mask(mask))

    def image(self, x: np.ndarray) -> np.ndarray:
        """The transformed image."""
        raise NotImplementedError

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """The transformed mask; intensity transforms leave it as it is."""
        return mask


@register
class Flip(Twin):
    """Reverse the given spatial axes (0 = first spatial axis; -1 = x, the horizontal one)."""

    _config_keys = ("axes",)

    def __init__(self, axes: Sequence[int] = (-1,)):
        self.axes = tuple(int(a) for a in axes)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x with `axes` reversed (a view)."""
        if not self.axes:
            return x
        return np.flip(x, axis=tuple(a % (x.ndim - 1) for a in self.axes))

    mask = image


@register
class Rot90(Twin):
    """np.rot90 by k quarter turns in a plane of spatial axes (default the last two)."""

    _config_keys = ("k", "plane")

    def __init__(self, k: int = 1, plane: Sequence[int] | None = None):
        self.k = int(k) % 4
        self.plane = None if plane is None else tuple(int(p) for p in plane)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x turned k quarter turns."""
        if self.k == 0:
            return x
        return np.rot90(x, self.k, axes=_plane(self.plane, x.ndim - 1))

    mask = image


def _nearest_warp(src: np.ndarray, m: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """scipy.ndimage.affine_transform(order=0, mode="constant", cval=0) of every channel of `src`
    (*spatial, C) at once, value for value (its rounding and bounds), about twice as fast; any dtype."""
    spatial = src.shape[:-1]
    grid = np.indices(spatial, dtype=np.float64).reshape(len(spatial), -1)
    inside = np.ones(grid.shape[1], bool)
    flat = np.zeros(grid.shape[1], np.intp)
    for h, n in enumerate(spatial):
        cc = grid[0] * m[h, 0]
        for k in range(1, len(spatial)):
            cc = cc + grid[k] * m[h, k]
        cc = cc + offset[h]
        inside &= (cc >= 0) & (cc <= n - 1)
        flat = flat * n + np.clip(np.floor(cc + 0.5), 0, n - 1).astype(np.intp)
    out = src.reshape(-1, src.shape[-1])[flat]
    out[~inside] = 0
    return out.reshape(src.shape)


@register
class Affine(Twin):
    """Rotate by `angle` degrees in `plane`, zoom by `scale`, shift by `translation` voxels.

    About the array centre; `angle` > 0 turns like np.rot90 (counter-clockwise as displayed).
    scale > 1 zooms in. fill: "min" (each channel's minimum), "nearest", or a number. Masks are
    warped with the same matrix, nearest-neighbour (order 0) and filled with 0.
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
        """True when the params describe no change at all."""
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

    def _warp(self, src: np.ndarray, order: int, fill: float | str) -> np.ndarray:
        """Warp each channel of `src` (*spatial, C) with this transform's matrix."""
        nsp = src.ndim - 1
        m, offset = self.matrix(src.shape[:nsp])
        out = np.empty_like(src)
        for ch in range(src.shape[-1]):
            plane = src[..., ch]
            if fill == "nearest":
                mode, cval = "nearest", 0.0
            else:
                mode, cval = "constant", float(plane.min()) if fill == "min" else float(fill)
            _ndimage().affine_transform(plane, m, offset=offset, output=out[..., ch], order=order,
                                        mode=mode, cval=cval, prefilter=order > 1)
        return out

    def image(self, x: np.ndarray) -> np.ndarray:
        """x warped with `order` interpolation and `fill` outside."""
        if self.is_identity(x.ndim - 1):
            return x
        return self._warp(x if x.dtype.kind == "f" else x.astype(np.float32), self.order, self.fill)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """The mask warped nearest-neighbour, 0 outside; its dtype (bool, int, float) is kept."""
        if self.is_identity(mask.ndim - 1):
            return mask
        return _nearest_warp(mask, *self.matrix(mask.shape[:-1]))


@register
class Rotate(Affine):
    """Rotate by `angle` degrees in `plane` (the Affine twin with only a rotation)."""

    _config_keys = ("angle", "plane", "order", "fill")

    def __init__(self, angle: float, plane: Sequence[int] | None = None, order: int = 1, fill: float | str = "min"):
        super().__init__(angle=angle, plane=plane, order=order, fill=fill)


@register
class BrightnessContrast(Twin):
    """out = (x - mean) * contrast + mean + brightness (mean over the sample)."""

    _config_keys = ("brightness", "contrast")

    def __init__(self, brightness: float = 0.0, contrast: float = 1.0):
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x with contrast scaled about its mean, then shifted."""
        x = x.astype(np.float32, copy=False)
        mean = x.mean(dtype=np.float64)
        return ((x - mean) * self.contrast + mean + self.brightness).astype(np.float32)


@register
class Gamma(Twin):
    """Gamma on the sample rescaled to [0, 1] by its min/max, then scaled back (works on z-scores)."""

    _config_keys = ("gamma",)

    def __init__(self, gamma: float = 1.0):
        if float(gamma) <= 0:
            raise ConfigError(f"gamma must be positive, got {gamma}")
        self.gamma = float(gamma)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x ** gamma within its own [min, max]."""
        x = x.astype(np.float32, copy=False)
        lo, hi = float(x.min()), float(x.max())
        if self.gamma == 1.0 or hi <= lo:
            return x
        return (((x - lo) / (hi - lo)) ** self.gamma * (hi - lo) + lo).astype(np.float32)


@register
class GaussianNoise(Twin):
    """Add N(0, std^2) noise drawn from a generator seeded with `seed` (so it replays exactly)."""

    _config_keys = ("std", "seed")

    def __init__(self, std: float = 0.0, seed: int = 0):
        self.std = float(std)
        self.seed = int(seed)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x plus the seeded noise."""
        x = x.astype(np.float32, copy=False)
        if self.std == 0:
            return x
        noise = np.random.default_rng(self.seed).standard_normal(x.shape, dtype=np.float32)
        return x + np.float32(self.std) * noise


def _sizes(size: int | Sequence[int], nsp: int) -> tuple[int, ...]:
    """A crop size per spatial axis (one int: the same on every axis)."""
    sizes = (int(size),) * nsp if np.isscalar(size) else tuple(int(s) for s in size)
    if len(sizes) != nsp or min(sizes) < 1:
        raise ConfigError(f"crop size needs {nsp} positive sides, got {size!r}")
    return sizes


@register
class Crop(Twin):
    """Cut a `size` window at `start` (per axis, a fraction of the free range [0, side - size]); with
    `centre_on_mask` and a non-empty mask, centre it instead on foreground voxel number
    floor(`pick` x count) (C order), clipped to the image. Image and mask get the same window."""

    _config_keys = ("size", "start", "centre_on_mask", "pick")

    def __init__(self, size: int | Sequence[int], start: Sequence[float] | None = None,
                 centre_on_mask: bool = False, pick: float = 0.0):
        self.size = int(size) if np.isscalar(size) else tuple(int(s) for s in size)
        self.start = None if start is None else tuple(float(f) for f in start)
        self.centre_on_mask = bool(centre_on_mask)
        self.pick = float(pick)

    def window(self, spatial: Sequence[int], mask: np.ndarray | None) -> tuple[slice, ...]:
        """The crop's slices for an image of `spatial` shape (and its mask, with a channel axis)."""
        sizes = _sizes(self.size, len(spatial))
        if any(p > s for p, s in zip(sizes, spatial)):
            raise InputError(f"crop {list(sizes)} is larger than the image {list(spatial)}")
        free = [s - p for p, s in zip(sizes, spatial)]
        flat = np.flatnonzero(_foreground(mask)) if (self.centre_on_mask and mask is not None) else ()
        if len(flat):
            centre = np.unravel_index(flat[min(int(self.pick * len(flat)), len(flat) - 1)], tuple(spatial))
            start = [int(np.clip(int(c) - p // 2, 0, f)) for c, p, f in zip(centre, sizes, free)]
        else:
            fracs = self.start if self.start is not None else (0.5,) * len(spatial)
            start = [min(int(u * (f + 1)), f) for u, f in zip(fracs, free)]
        return tuple(slice(a, a + p) for a, p in zip(start, sizes))

    def pair(self, x: np.ndarray, mask: np.ndarray | None) -> Pair:
        """The same window of image and mask (views)."""
        sl = self.window(x.shape[:-1], mask)
        return x[sl], (None if mask is None else mask[sl])


@register
class ChannelDropout(Twin):
    """Zero input channel `channel` (None: keep all), so a network cannot lean on one sequence alone."""

    _config_keys = ("channel",)

    def __init__(self, channel: int | None = None):
        self.channel = None if channel is None else int(channel)

    def image(self, x: np.ndarray) -> np.ndarray:
        """x with channel `channel` set to 0."""
        if self.channel is None:
            return x
        out = np.array(x, dtype=np.float32, copy=True)
        out[..., self.channel] = 0.0
        return out


def _box_mean(field: np.ndarray, k: int) -> np.ndarray:
    """k-wide box mean of a spatial float field (edges repeated); exact zeros stay zero."""
    out = _ndimage().uniform_filter(field, size=k, mode="nearest")
    out[out < 1e-6] = 0.0  # the running sum leaves round-off far from any foreground
    return out


@register
class LesionFade(Twin):
    """Move the lesion's (mask > 0.5) mean intensity per channel `amount` of the way towards that of
    the tissue in a ring around it, softening the edge and keeping the texture: a faint version of a
    visible lesion. No mask, no lesion, or no tissue ring around it: the image is left as it is."""

    _config_keys = ("amount",)

    def __init__(self, amount: float = 0.0):
        self.amount = float(amount)

    def pair(self, x: np.ndarray, mask: np.ndarray | None) -> Pair:
        """The faded image; the mask unchanged."""
        if mask is None or self.amount == 0.0:
            return x, mask
        fg = _foreground(mask)
        if not fg.any():
            return x, mask
        x = x.astype(np.float32, copy=False)
        spatial = tuple(range(x.ndim - 1))
        lesion = fg.astype(np.float32)
        soft, near = _box_mean(lesion, 5), _box_mean(lesion, 15)
        tissue = x > x.min(axis=spatial, keepdims=True) + 1e-3  # not the background
        ring = ((near > 0) & ~fg)[..., None] & tissue
        if not ring.any():
            return x, mask
        lesion_mean = (x * lesion[..., None]).sum(axis=spatial) / max(float(lesion.sum()), 1.0)
        ring_mean = (x * ring).sum(axis=spatial) / np.maximum(ring.sum(axis=spatial), 1)
        shift = (lesion_mean - ring_mean).astype(np.float32)
        return x - np.float32(self.amount) * soft[..., None] * shift, mask

    def image(self, x: np.ndarray) -> np.ndarray:
        """Without a mask there is nothing to fade."""
        return x
