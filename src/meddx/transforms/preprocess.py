"""Preprocessing: resample, window/normalise, crop/pad, resize, channel count -> model input.

Each step is a small class (parameters in `__init__`, work in `__call__`, `get_config()`
JSON-serialisable). `Preprocessing` chains them into the one function a RUN folder stores
so train, evaluate and predict feed the model identical arrays. numpy/scipy only.

Longer than 500 lines on purpose: each transform is a small class with its config round-trip, and
`Preprocessing` composes them; one module keeps the registry of intensity modes and their parsing together.
"""

from __future__ import annotations

import sys

from typing import Any, Iterable, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError, MeddxError
from meddx.io.image import Image
from meddx.transforms._base import (
    Transform,
    as_array,
    check_finite,
    like_input,
    register,
    spatial_channel_split,
    to_float,
    transform_from_config,
)

def _ndimage():  # scipy.ndimage costs ~0.5 s to import: only load it when a warp is needed
    from scipy import ndimage

    return ndimage


__all__ = [
    "WINDOW_PRESETS", "INTENSITY_CHOICES", "FIT_CHOICES", "Compose", "Resample", "Resize", "Window", "ZScore",
    "MinMax", "ScaleIntensity", "ForegroundCrop", "CenterCropPad", "ToChannels", "Preprocessing",
    "resample_array", "resize_array", "transform_from_config",
]

#: CT windows in Hounsfield units: name -> (center/level, width).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (600.0, 2800.0),
    "head_soft_tissue": (60.0, 350.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "soft_tissue": (40.0, 400.0),
    "liver": (60.0, 150.0),
    "angio": (300.0, 600.0),
    "bone": (400.0, 1800.0),
    "spine_bone": (400.0, 1800.0),
}

FIT_CHOICES = ("stretch", "pad", "crop")
INTENSITY_CHOICES = ("none", "minmax", "minmax:<lo>,<hi>", "zscore", "zscore:nonzero",
                     "zscore:foreground", "zscore:channel", "zscore:nonzero,channel", "zscore:foreground,channel",
                     "scale255",
                     "window:<preset>", "window:<center>,<width>")


def _tuple(value: Any, n: int | None, name: str, cast: type = float) -> tuple:
    """Scalar -> n-tuple; sequence -> tuple (length checked when n is given)."""
    if np.isscalar(value):
        if n is None:
            return (cast(value),)
        return (cast(value),) * n
    out = tuple(cast(v) for v in value)
    if n is not None and len(out) != n:
        raise ConfigError(f"{name} needs {n} values, got {list(out)}")
    return out


# -- geometric core ----------------------------------------------------------------------------

def _scale_warp(arr: np.ndarray, n: int, out_shape: Sequence[int], factors: Sequence[float],
                order: int, anti_alias: bool, mode: str = "nearest") -> np.ndarray:
    """Resample the first `n` axes of `arr` (later axes looped over) by per-axis `factors`.

    Output voxel o samples input coordinate (o + 0.5) * f - 0.5 (voxel *corners* aligned, so the
    physical extent is kept, as in skimage.transform.resize). Gaussian pre-smoothing with
    sigma = (f - 1) / 2 when downsampling and `anti_alias` (not for order 0, i.e. masks).
    """
    out_shape = tuple(int(s) for s in out_shape)
    f = np.asarray(factors, dtype=float)
    if tuple(arr.shape[:n]) == out_shape and np.allclose(f, 1.0):
        return arr
    if order == 0:
        work = arr
    else:
        work = to_float(arr)
    rest = arr.shape[n:]
    flat = work.reshape(arr.shape[:n] + (-1,))
    out = np.empty(out_shape + (flat.shape[-1],), dtype=work.dtype)
    sigma = np.maximum(0.0, (f - 1.0) / 2.0)
    smooth = anti_alias and order > 0 and np.any(sigma > 0)
    offset = 0.5 * f - 0.5
    for c in range(flat.shape[-1]):
        src = flat[..., c]
        if smooth:
            src = _ndimage().gaussian_filter(src, sigma, mode="nearest")
        _ndimage().affine_transform(src, f, offset=offset, output_shape=out_shape, output=out[..., c],
                                 order=order, mode=mode, prefilter=order > 1)
    return out.reshape(out_shape + rest)


def resample_array(array: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float],
                   order: int = 1, anti_alias: bool = True) -> np.ndarray:
    """Resample a (spatial..., [c]) array from `spacing` to `new_spacing` (mm), keeping extent.

    The first len(spacing) axes are spatial; any trailing (channel) axes are kept."""
    n = len(spacing)
    f = np.asarray(new_spacing, float) / np.asarray(spacing, float)
    shape = array.shape[:n]
    out_shape = tuple(max(1, int(round(s / fi))) for s, fi in zip(shape, f))
    return _scale_warp(array, n, out_shape, f, order, anti_alias)


def resize_array(array: np.ndarray, size: Sequence[int], order: int = 1, anti_alias: bool = True) -> np.ndarray:
    """Resize the first len(size) axes of `array` to `size` (trailing channel axes kept)."""
    n = len(size)
    f = np.asarray(array.shape[:n], float) / np.asarray(size, float)
    return _scale_warp(array, n, size, f, order, anti_alias)


def _shift_origin(image: Image, index_offset: Sequence[float], spacing: Sequence[float]) -> tuple[float, ...]:
    """LPS origin of a grid whose voxel 0 lies at (fractional) index `index_offset` of `image`."""
    n = image.spatial_ndim
    d = np.asarray(image.direction, float).reshape(3, -1)[:, :n]
    shift = d @ (np.asarray(index_offset, float) * np.asarray(spacing, float)[:n])
    return tuple(float(v) for v in np.asarray(image.origin, float)[:3] + shift)


# -- transforms --------------------------------------------------------------------------------

@register
class Compose(Transform):
    """Apply transforms in order."""

    _config_keys = ("transforms",)

    def __init__(self, transforms: Iterable[Any]):
        self.transforms = [t if callable(t) else transform_from_config(t) for t in transforms]

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


@register
class Resample(Transform):
    """Physically resample an `Image` to `spacing` mm (linear; `order=0` nearest for masks)."""

    _config_keys = ("spacing", "order", "anti_alias")

    def __init__(self, spacing: float | Sequence[float], order: int = 1, anti_alias: bool = True):
        self.spacing = _tuple(spacing, None, "spacing")
        if any(s <= 0 for s in self.spacing):
            raise ConfigError(f"spacing must be positive, got {list(self.spacing)}")
        self.order = int(order)
        self.anti_alias = bool(anti_alias)

    def target(self, spatial_ndim: int) -> tuple[float, ...]:
        """The target spacing for an image with `spatial_ndim` axes (a single value is isotropic)."""
        if len(self.spacing) == 1:
            return self.spacing * spatial_ndim
        if len(self.spacing) != spatial_ndim:
            raise ConfigError(f"Resample spacing {list(self.spacing)} does not fit a {spatial_ndim}D image")
        return self.spacing

    def __call__(self, image: Image) -> Image:
        if not isinstance(image, Image):
            raise InputError("Resample needs an Image (with spacing); use Resize for a bare array")
        n = image.spatial_ndim
        old = image.spacing[:n]
        new = self.target(n)
        arr = image.array
        if image.is_sequence:
            out = np.stack([resample_array(a, old, new, self.order, anti_alias=self.anti_alias) for a in arr])
        else:
            out = resample_array(arr, old, new, self.order, anti_alias=self.anti_alias)
        # voxel 0 of the new grid sits at old index (f - 1) / 2
        offset = (np.asarray(new) / np.asarray(old) - 1.0) / 2.0
        return image.with_array(out, spacing=new, origin=_shift_origin(image, offset, old))


@register
class Resize(Transform):
    """Resize the spatial axes to `size` (anti-aliased when shrinking); channels-last kept.

    `size` as a tuple fixes the number of spatial axes. An int needs `spatial_ndim`, else it is
    guessed: 2D for (y,x) and (y,x,c<=4), 3D for (z,y,x) with x>4 and (z,y,x,c).
    Images get their spacing updated so the physical extent stays the same.
    """

    _config_keys = ("size", "order", "anti_alias", "spatial_ndim")

    def __init__(self, size: int | Sequence[int], order: int = 1, anti_alias: bool = True,
                 spatial_ndim: int | None = None):
        self.size = int(size) if np.isscalar(size) else tuple(int(s) for s in size)
        if spatial_ndim is None and not np.isscalar(size):
            spatial_ndim = len(self.size)
        self.spatial_ndim = spatial_ndim
        self.order = int(order)
        self.anti_alias = bool(anti_alias)

    def _ndim(self, arr: np.ndarray) -> int:
        if self.spatial_ndim is not None:
            return self.spatial_ndim
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] <= 4):
            return 2
        return 3

    def __call__(self, x: Any) -> Any:
        arr = as_array(x)
        n, _ = spatial_channel_split(x, None, self._ndim(arr))
        size = _tuple(self.size, n, "size", int)
        out = resize_array(arr, size, self.order, self.anti_alias and self.order > 0)
        if isinstance(x, Image):
            f = np.asarray(arr.shape[:n], float) / np.asarray(size, float)
            spacing = tuple(np.asarray(x.spacing[:n]) * f)
            return x.with_array(out, spacing=spacing, origin=_shift_origin(x, (f - 1) / 2, x.spacing))
        return out


@register
class Window(Transform):
    """CT window: maps [center - width/2, center + width/2] HU linearly to [0, 1] (clipped)."""

    _config_keys = ("center", "width", "clip")

    def __init__(self, center: float, width: float, clip: bool = True):
        if float(width) <= 0:
            raise ConfigError(f"window width must be positive, got {width}")
        self.center = float(center)
        self.width = float(width)
        self.clip = bool(clip)

    @classmethod
    def preset(cls, name: str, clip: bool = True) -> "Window":
        """A named window from WINDOW_PRESETS (brain, subdural, stroke, lung, mediastinum, ...)."""
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOW_PRESETS:
            raise ConfigError(f"unknown CT window {name!r}; choose one of {', '.join(WINDOW_PRESETS)}")
        center, width = WINDOW_PRESETS[key]
        return cls(center, width, clip)

    def __call__(self, x: Any) -> Any:
        arr = to_float(as_array(x))
        out = (arr - (self.center - self.width / 2.0)) / self.width
        if self.clip:
            out = np.clip(out, 0.0, 1.0)
        return like_input(x, out.astype(np.float32, copy=False))


@register
class ZScore(Transform):
    """Subtract the mean and divide by the std: over non-zero voxels if `nonzero`, or over the
    foreground (voxels above the image's Otsu threshold) if `foreground`.

    `foreground` is for MR whose background is sometimes exact zeros and sometimes low noise
    (LGG: 0-32 % zeros per patient): non-zero statistics then describe the noise, not the head,
    and the same tissue lands at different values from patient to patient."""

    _config_keys = ("nonzero", "channel_wise", "eps", "foreground")

    def __init__(self, nonzero: bool = False, channel_wise: bool = False, eps: float = 1e-8,
                 foreground: bool = False):
        if nonzero and foreground:
            raise ConfigError("zscore: choose one of 'nonzero' and 'foreground'")
        self.nonzero = bool(nonzero)
        self.channel_wise = bool(channel_wise)
        self.eps = float(eps)
        self.foreground = bool(foreground)

    def _norm(self, a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        if self.foreground:
            sel = a[a > _otsu_threshold(a)]
        else:
            sel = a[a != 0] if self.nonzero else a
        if sel.size == 0:
            return np.zeros_like(a)
        mean, std = sel.mean(), sel.std()
        out = (a - mean) / std if std > self.eps else a - mean
        if self.nonzero:
            out[a == 0] = 0.0
        return out

    def __call__(self, x: Any) -> Any:
        arr = as_array(x)
        if self.channel_wise and arr.ndim > 2:
            out = np.stack([self._norm(arr[..., c]) for c in range(arr.shape[-1])], axis=-1)
        else:
            out = self._norm(arr)
        return like_input(x, out.astype(np.float32))


def _otsu_threshold(a: np.ndarray) -> float:
    """Otsu's threshold of `a` (its minimum when the image is constant or has no finite values)."""
    from skimage.filters import threshold_otsu

    finite = a[np.isfinite(a)]
    if finite.size == 0 or finite.min() == finite.max():
        return float(finite.min()) if finite.size else 0.0
    return float(threshold_otsu(finite, nbins=256))


@register
class MinMax(Transform):
    """Scale so the `percentiles` (lo, hi) map to 0 and 1 (clipped); None = true min/max."""

    _config_keys = ("percentiles", "clip")

    def __init__(self, percentiles: Sequence[float] | None = (0.5, 99.5), clip: bool = True):
        self.percentiles = None if percentiles is None else _tuple(percentiles, 2, "percentiles")
        if self.percentiles is not None and not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ConfigError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {list(self.percentiles)}")
        self.clip = bool(clip)

    def __call__(self, x: Any) -> Any:
        arr = to_float(as_array(x))
        if arr.size == 0:
            return like_input(x, arr.astype(np.float32))
        if self.percentiles is None or self.percentiles == (0.0, 100.0):
            lo, hi = float(arr.min()), float(arr.max())
        else:
            lo, hi = (float(v) for v in np.percentile(arr, self.percentiles))
        if hi - lo <= 0:
            out = np.zeros(arr.shape, np.float32)
        else:
            out = (arr - lo) / (hi - lo)
            if self.clip:
                out = np.clip(out, 0.0, 1.0)
        return like_input(x, out.astype(np.float32, copy=False))


@register
class ScaleIntensity(Transform):
    """out = x * scale + offset (e.g. scale=1/255 for 8-bit images)."""

    _config_keys = ("scale", "offset")

    def __init__(self, scale: float = 1.0 / 255.0, offset: float = 0.0):
        self.scale = float(scale)
        self.offset = float(offset)

    def __call__(self, x: Any) -> Any:
        arr = to_float(as_array(x))
        return like_input(x, (arr * self.scale + self.offset).astype(np.float32, copy=False))


@register
class ForegroundCrop(Transform):
    """Crop to the bounding box of voxels > `threshold` (+ `margin` voxels per side).

    threshold: a number, "otsu", or None (anything above the image minimum). With channels,
    a voxel is foreground if any channel is. An empty foreground leaves the input unchanged.
    """

    _config_keys = ("threshold", "margin", "spatial_ndim")

    def __init__(self, threshold: float | str | None = None, margin: int | Sequence[int] = 0,
                 spatial_ndim: int | None = None):
        if isinstance(threshold, str) and threshold != "otsu":
            raise ConfigError(f"ForegroundCrop threshold must be a number, 'otsu' or None, got {threshold!r}")
        self.threshold = threshold if threshold is None or isinstance(threshold, str) else float(threshold)
        self.margin = int(margin) if np.isscalar(margin) else tuple(int(m) for m in margin)
        self.spatial_ndim = spatial_ndim

    def bbox(self, x: Any) -> tuple[slice, ...]:
        """Slices (one per spatial axis) of the foreground box, margin included."""
        arr = as_array(x)
        n, has_c = spatial_channel_split(x, self.spatial_ndim)
        ref = arr.max(axis=-1) if has_c else arr
        if self.threshold is None:
            mask = ref > ref.min()
        elif self.threshold == "otsu":
            from skimage.filters import threshold_otsu

            mask = ref > threshold_otsu(ref) if ref.min() < ref.max() else np.zeros(ref.shape, bool)
        else:
            mask = ref > self.threshold
        if not mask.any():
            return tuple(slice(0, s) for s in ref.shape)
        margin = _tuple(self.margin, n, "margin", int)
        out = []
        for ax in range(n):
            other = tuple(a for a in range(n) if a != ax)
            hit = np.flatnonzero(mask.any(axis=other))
            out.append(slice(max(0, hit[0] - margin[ax]), min(ref.shape[ax], hit[-1] + 1 + margin[ax])))
        return tuple(out)

    def __call__(self, x: Any) -> Any:
        box = self.bbox(x)
        out = as_array(x)[box]
        if isinstance(x, Image):
            return x.with_array(out, origin=_shift_origin(x, [s.start for s in box], x.spacing))
        return out


@register
class CenterCropPad(Transform):
    """Centre-crop or pad the spatial axes to `size` (channels-last kept).

    pad_value: a number or "min" (the image minimum, e.g. air in CT).
    """

    _config_keys = ("size", "pad_value")

    def __init__(self, size: Sequence[int], pad_value: float | str = 0.0):
        self.size = tuple(int(s) for s in size)
        if isinstance(pad_value, str) and pad_value != "min":
            raise ConfigError(f"pad_value must be a number or 'min', got {pad_value!r}")
        self.pad_value = pad_value if isinstance(pad_value, str) else float(pad_value)

    def __call__(self, x: Any) -> Any:
        arr = as_array(x)
        n = len(self.size)
        if not isinstance(x, Image):
            spatial_channel_split(x, n)  # validates the number of axes
        crop, pad, start = [], [], []
        for s, t in zip(arr.shape[:n], self.size):
            if s >= t:
                a = (s - t) // 2
                crop.append(slice(a, a + t))
                pad.append((0, 0))
                start.append(a)
            else:
                b = (t - s) // 2
                crop.append(slice(0, s))
                pad.append((b, t - s - b))
                start.append(-b)
        out = arr[tuple(crop)]
        if any(p != (0, 0) for p in pad):
            value = (arr.min() if arr.size else 0) if self.pad_value == "min" else self.pad_value
            pad += [(0, 0)] * (arr.ndim - n)
            out = np.pad(out, pad, mode="constant", constant_values=value)
        if isinstance(x, Image):
            return x.with_array(out, origin=_shift_origin(x, start, x.spacing))
        return out


@register
class ToChannels(Transform):
    """Make the channel axis hold `n` channels: gray -> RGB by repetition, RGB(A) -> gray by luminance.

    The input must have a channel axis, unless `spatial_ndim` is given and the input has only
    spatial axes (then one is added).
    """

    _config_keys = ("n", "spatial_ndim")

    _LUMA = np.array([0.299, 0.587, 0.114], np.float32)

    def __init__(self, n: int, spatial_ndim: int | None = None):
        if int(n) < 1:
            raise ConfigError(f"channel count must be >= 1, got {n}")
        self.n = int(n)
        self.spatial_ndim = spatial_ndim

    def __call__(self, x: Any) -> Any:
        arr = as_array(x)
        if isinstance(x, Image):
            if not x.has_channels:
                arr = arr[..., None]
        elif self.spatial_ndim is not None and arr.ndim == self.spatial_ndim:
            arr = arr[..., None]
        c = arr.shape[-1]
        if c == self.n:
            out = arr
        elif c == 1:
            out = np.repeat(arr, self.n, axis=-1)
        elif self.n == 1 and c in (3, 4):
            out = (to_float(arr[..., :3]) @ self._LUMA)[..., None].astype(np.float32)
        elif self.n == 1:
            out = to_float(arr).mean(axis=-1, keepdims=True)
        elif self.n == 3 and c == 4:
            out = arr[..., :3]
        else:
            raise InputError(f"cannot convert an image with {c} channels to {self.n} channels "
                             f"(shape {tuple(arr.shape)})")
        return like_input(x, out, has_channels=True) if isinstance(x, Image) else out


# -- the model-input pipeline ------------------------------------------------------------------

def _parse_intensity(spec: str | None) -> Transform | None:
    """'minmax' | 'minmax:lo,hi' | 'zscore' | 'zscore:nonzero' | 'zscore:foreground' (statistics over the
    voxels above Otsu's threshold) | 'zscore:nonzero,channel' (each channel on its own, e.g. multi-sequence MR) | 'scale255' | 'window:<preset>'
    | 'window:<center>,<width>' | 'none' -> a transform (or None)."""
    if spec is None:
        return None
    text = str(spec).strip().lower()
    kind, _, arg = text.partition(":")
    try:
        if kind == "none" and not arg:
            return None
        if kind == "minmax":
            return MinMax(_tuple(arg.split(","), 2, "minmax percentiles")) if arg else MinMax()
        opts = set(filter(None, arg.split(",")))
        if kind == "zscore" and opts <= {"nonzero", "channel", "foreground"} and not {"nonzero", "foreground"} <= opts:
            return ZScore(nonzero="nonzero" in opts, channel_wise="channel" in opts, foreground="foreground" in opts)
        if kind == "scale255" and not arg:
            return ScaleIntensity(1.0 / 255.0)
        if kind == "window" and arg:
            if arg.replace("_", "").replace("-", "").isalpha():
                return Window.preset(arg)
            center, width = _tuple(arg.split(","), 2, "window")
            return Window(center, width)
    except ValueError as exc:
        if isinstance(exc, MeddxError):  # a specific complaint (unknown CT window ...) says more than the generic one
            raise
    raise ConfigError(f"unknown intensity {spec!r}; choose one of {', '.join(INTENSITY_CHOICES)}")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


@register
class Preprocessing(Transform):
    """Everything between a read `Image` (or raw array) and the model: one call, one config.

    Steps: check dimensionality/NaNs -> optional channel selection (`select_channels`, e.g. [1] keeps
    only the FLAIR of a pre/FLAIR/post MR stack) -> optional foreground crop -> optional resampling to
    `spacing` (Images with known spacing only: raw arrays and plain PNGs are not resampled)
    -> intensity (at native resolution) -> resize to `image_size` (`fit`: "stretch", or keep
    the aspect ratio and centre "pad" with the minimum / "crop") -> `channels`.
    Output float32 of shape (*image_size, channels).
    """

    _config_keys = ("spatial_ndim", "image_size", "channels", "intensity", "spacing", "crop", "fit", "order",
                    "select_channels")

    def __init__(self, spatial_ndim: int = 2, image_size: int | Sequence[int] = 28, channels: int = 1,
                 intensity: str | None = "minmax", spacing: float | Sequence[float] | None = None,
                 crop: str | None = None, fit: str = "stretch", order: int = 1,
                 select_channels: Sequence[int] | None = None, version: int = 1):
        if int(spatial_ndim) not in (2, 3):
            raise ConfigError(f"spatial_ndim must be 2 or 3, got {spatial_ndim}")
        self.spatial_ndim = int(spatial_ndim)
        self.image_size = _tuple(image_size, self.spatial_ndim, "image_size", int)
        if any(s < 1 for s in self.image_size):
            raise ConfigError(f"image_size must be positive, got {list(self.image_size)}")
        self.channels = int(channels)
        self.intensity = "none" if intensity is None else str(intensity)
        self.spacing = None if spacing is None else _tuple(spacing, self.spatial_ndim, "spacing")
        if crop not in (None, "foreground"):
            raise ConfigError(f"crop must be None or 'foreground', got {crop!r}")
        self.crop = crop
        if fit not in FIT_CHOICES:
            raise ConfigError(f"fit must be one of {', '.join(FIT_CHOICES)}, got {fit!r}")
        self.fit = fit
        self.order = int(order)
        self.select_channels = None if select_channels is None else [int(c) for c in select_channels]
        if self.select_channels is not None and (not self.select_channels or min(self.select_channels) < 0):
            raise ConfigError(f"select_channels must be channel indices >= 0, got {select_channels}")
        del version  # format version of the config; only 1 exists
        self._intensity = _parse_intensity(self.intensity)
        self._crop = ForegroundCrop(spatial_ndim=self.spatial_ndim) if crop == "foreground" else None
        self._resample = Resample(self.spacing, order=self.order) if self.spacing is not None else None
        self._channels = ToChannels(self.channels)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """(*image_size, channels): what the model's input layer must accept."""
        return (*self.image_size, self.channels)

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["version"] = 1
        return cfg

    def _check(self, x: Any) -> tuple[np.ndarray, tuple[float, ...] | None, str | None]:
        """(array with a channel axis, spacing or None, source) after dimensionality checks."""
        want = "a 2D image" if self.spatial_ndim == 2 else "a 3D volume"
        if isinstance(x, Image):
            src = x.source or None
            shape = tuple(x.array.shape)
            if x.is_sequence:
                raise InputError(f"expected {want}, got a sequence of {x.n_frames} frames of shape "
                                 f"{_shape_text(shape)} (preprocess frames with .batch())", src)
            if x.spatial_ndim != self.spatial_ndim:
                got = "a 2D image" if x.spatial_ndim == 2 else "a 3D volume"
                raise InputError(f"expected {want}, got {got} of shape {_shape_text(shape)}", src)
            arr = x.array if x.has_channels else x.array[..., None]
            check_finite(arr, src)
            # a PNG/JPEG Image has nominal 1 mm pixels: its spacing is unknown, not 1 mm
            known = x.has_geometry or any(s != 1.0 for s in x.spacing[: self.spatial_ndim])
            return arr, (x.spacing[: self.spatial_ndim] if known else None), src
        arr = np.asarray(x)
        shape = tuple(arr.shape)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"expected a numeric array, got dtype {arr.dtype}")
        if arr.size == 0:
            raise InputError(f"expected {want}, got an empty array of shape {_shape_text(shape)}")
        if self.spatial_ndim == 2:
            if arr.ndim == 2:
                arr = arr[..., None]
            elif arr.ndim == 3 and shape[-1] <= 4:
                pass
            elif arr.ndim == 3:
                raise InputError(f"expected a 2D image, got a 3D volume of shape {_shape_text(shape)} "
                                 "(for a stack of images use .batch())")
            else:
                raise InputError(f"expected a 2D image, got an array of shape {_shape_text(shape)}")
        else:
            if arr.ndim == 2:
                raise InputError(f"expected a 3D volume, got a 2D image of shape {_shape_text(shape)}")
            if arr.ndim == 3:
                if shape[-1] in (3, 4) and min(shape[:2]) >= 8 * shape[-1]:
                    raise InputError(f"expected a 3D volume, got what looks like a 2D colour image of "
                                     f"shape {_shape_text(shape)}")
                arr = arr[..., None]
            elif arr.ndim == 4 and shape[-1] <= 4:
                pass
            else:
                raise InputError(f"expected a 3D volume, got an array of shape {_shape_text(shape)}")
        check_finite(arr)
        return arr, None, None

    def __call__(self, x: Any) -> np.ndarray:
        arr, spacing, src = self._check(x)
        n = self.spatial_ndim
        if self.select_channels is not None:
            arr = self._select(arr, src)
        if self._crop is not None:
            arr = arr[self._crop.bbox(arr)]
        if self._resample is not None and spacing is not None:
            arr = resample_array(arr, spacing, self._resample.target(n), self.order)
        arr = to_float(arr)
        if self._intensity is not None:
            arr = self._intensity(arr)
        arr = self._fit(arr)
        arr = self._channels(arr)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _select(self, arr: np.ndarray, src: str | None) -> np.ndarray:
        """Keep only the `select_channels` of the channel axis (an index past the end is an error)."""
        have = arr.shape[-1]
        if max(self.select_channels) >= have:  # type: ignore[arg-type]
            raise InputError(f"select_channels {self.select_channels} but the image has {have} channel(s)", src)
        return arr[..., self.select_channels]

    def _fit(self, arr: np.ndarray) -> np.ndarray:
        """Resize to image_size: stretched, or aspect kept and centre padded ("pad") / cropped ("crop")."""
        size = self.image_size
        if self.fit != "stretch":
            ratios = [t / s for t, s in zip(size, arr.shape[: self.spatial_ndim])]
            r = min(ratios) if self.fit == "pad" else max(ratios)
            inner = tuple(max(1, int(round(s * r))) for s in arr.shape[: self.spatial_ndim])
            if self.fit == "pad":
                inner = tuple(min(i, t) for i, t in zip(inner, size))
            else:
                inner = tuple(max(i, t) for i, t in zip(inner, size))
            arr = resize_array(arr, inner, self.order, anti_alias=self.order > 0)
            return CenterCropPad(size, pad_value="min")(arr)
        return resize_array(arr, size, self.order, anti_alias=self.order > 0)

    def batch(self, items: Iterable[Any] | np.ndarray, progress: bool | None = None,
              desc: str = "preprocessing") -> np.ndarray:
        """Preprocess many images into one (N, *image_size, channels) float32 array.

        A tqdm bar is shown for 200 items or more on a terminal unless `progress` says otherwise (never into a
        non-TTY log).
        """
        items = items if isinstance(items, np.ndarray) else list(items)
        n = len(items)
        out = np.empty((n, *self.output_shape), np.float32)
        show = (n >= 200 and sys.stderr.isatty()) if progress is None else bool(progress)
        iterator: Iterable[Any] = items
        if show:
            from tqdm.auto import tqdm

            iterator = tqdm(items, total=n, desc=desc, unit="img", leave=False)
        for i, item in enumerate(iterator):
            out[i] = self(item)
        return out
