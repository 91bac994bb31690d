"""Shared machinery for transforms: a JSON config protocol and a name -> class registry.

Every transform stores its parameters as attributes named in `_config_keys`, so
`get_config()` is generic and `transform_from_config(cfg)` rebuilds it from the
`"class"` key. No code is ever executed from a config: only registered classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.io.image import Image

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make `cls` reachable from `transform_from_config`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def jsonable(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, nested transforms -> their configs."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "get_config"):
        return value.get_config()
    return value


class Transform:
    """Base class: parameters in `__init__`, work in `__call__`, config from `_config_keys`."""

    _config_keys: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable parameters, including the class name under "class"."""
        cfg: dict[str, Any] = {"class": type(self).__name__}
        for key in self._config_keys:
            cfg[key] = jsonable(getattr(self, key))
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Transform":
        """Rebuild from `get_config()` output (the "class" key is optional here)."""
        params = {k: v for k, v in dict(config).items() if k != "class"}
        try:
            return cls(**params)
        except TypeError as exc:
            raise ConfigError(f"bad parameters for transform {cls.__name__}: {exc}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._config_keys)
        return f"{type(self).__name__}({args})"


def transform_from_config(config: dict[str, Any]) -> Any:
    """Rebuild any meddx transform (preprocessing, augmentation, pipeline) from its config."""
    # Import both modules so every class is registered, whichever one the caller imported.
    from meddx.transforms import augment, preprocess  # noqa: F401

    if not isinstance(config, dict) or "class" not in config:
        raise ConfigError(f"a transform config must be a dict with a 'class' key, got {config!r}")
    name = config["class"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown transform class {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return cls.from_config(config)


# -- array helpers shared by preprocess and augment ------------------------------------------------

def as_array(x: Any) -> np.ndarray:
    """The numpy array of an Image or array-like."""
    return x.array if isinstance(x, Image) else np.asarray(x)


def like_input(x: Any, array: np.ndarray, **changes: Any) -> Any:
    """Return `array` wrapped like the input: an Image in, an Image out (geometry kept)."""
    return x.with_array(array, **changes) if isinstance(x, Image) else array


def to_float(array: np.ndarray) -> np.ndarray:
    """float32 view/copy (float64 kept as is to avoid precision loss before normalising)."""
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    return array.astype(np.float32)


def check_finite(array: np.ndarray, source: str | None = None) -> None:
    """Raise InputError when a float array holds NaN or infinity."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        n_nan = int(np.isnan(array).sum())
        what = f"{n_nan} NaN value(s)" if n_nan else "infinite values"
        raise InputError(f"image contains {what} (shape {tuple(array.shape)})", source or None)


def spatial_channel_split(x: Any, spatial_ndim: int | None, ndim_hint: int | None = None) -> tuple[int, bool]:
    """(spatial_ndim, has_channel_axis) of an Image or array.

    Images say it themselves. For arrays: `spatial_ndim` if given (a channel axis exists
    when ndim == spatial_ndim + 1); else `ndim_hint`; else all axes are spatial.
    """
    if isinstance(x, Image):
        if x.is_sequence:
            raise InputError(
                f"expected a single image or volume, got a sequence of {x.n_frames} frames "
                f"of shape {tuple(x.array.shape)}", x.source or None)
        return x.spatial_ndim, x.has_channels
    arr = np.asarray(x)
    n = spatial_ndim if spatial_ndim is not None else (ndim_hint if ndim_hint is not None else arr.ndim)
    if arr.ndim == n:
        return n, False
    if arr.ndim == n + 1:
        return n, True
    raise InputError(f"expected an array with {n} spatial axes (+ optional channels), got shape {tuple(arr.shape)}")
