"""Turn a `Dataset` into model-ready arrays with a `Preprocessing`, with an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from meddx.data.datasets import Dataset
from meddx.errors import InputError, MeddxError


def probe_item(ds: Dataset) -> tuple[int, int, tuple[int, ...]]:
    """(spatial_ndim, channels, spatial shape) of the first case, to pick preprocessing defaults."""
    first = ds.items[0]
    if isinstance(first, np.ndarray):
        ndim = ds.spatial_ndim or 2
        shape = first.shape
        channels = shape[-1] if len(shape) > ndim else 1
        return ndim, int(channels), tuple(int(s) for s in shape[:ndim])
    from meddx.io import read_image

    img = read_image(first)
    if img.is_sequence:
        raise InputError("is a sequence (video / cine / 4D series), which an image model cannot read; use a sequence "
                         "model (--model lstm|gru|tcn|transformer|cnn25d) or leave --model out", first)
    return img.spatial_ndim, img.n_channels, tuple(int(s) for s in img.spatial_shape)


def _cache_dir() -> Path:
    return Path(os.environ.get("MEDDX_CACHE", Path.home() / ".cache" / "meddx"))


def file_cache_key(path: str | Path, settings: dict[str, Any]) -> str:
    """Key of one file's derived arrays: its absolute path, size and mtime plus `settings` (JSON-able: the
    preprocessing and how the file was read), so editing or replacing the file, or changing a setting, misses."""
    p = Path(path)
    st = os.stat(p)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def load_cached_arrays(key: str, kind: str) -> dict[str, np.ndarray] | None:
    """The arrays `save_cached_arrays(key, kind, ...)` stored (cache folder `_cache_dir()/kind`), or None."""
    f = _cache_dir() / kind / f"{key}.npz"
    if not f.is_file():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged entry is a miss (it is rewritten)


def save_cached_arrays(key: str, kind: str, arrays: dict[str, np.ndarray]) -> bool:
    """Store `arrays` under `_cache_dir()/kind/<key>.npz` (temporary name, then rename); False when the cache
    folder is not writable (a read-only home must not stop training)."""
    folder = _cache_dir() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.tmp{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, folder / f"{key}.npz")
        return True
    except OSError:
        return False


def _cache_key(ds: Dataset, prep_config: dict[str, Any]) -> str | None:
    """Content key over file paths, sizes and mtimes plus the preprocessing (None for in-memory data)."""
    if not ds.items or isinstance(ds.items[0], np.ndarray):
        return None
    h = hashlib.sha256(json.dumps(prep_config, sort_keys=True).encode())
    for item in ds.items:
        st = os.stat(item)
        h.update(f"{item}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def materialise(ds: Dataset, prep: Any, use_cache: bool = True, progress: bool | None = None) -> np.ndarray:
    """(N, *size, C) float32 for every case; file datasets are read once and cached on disk."""
    key = _cache_key(ds, prep.get_config()) if use_cache else None
    cache_file = _cache_dir() / f"{key}.npy" if key else None
    if cache_file is not None and cache_file.is_file():
        try:
            arr = np.load(cache_file, allow_pickle=False)
            if arr.shape[0] == len(ds):
                return arr
        except (OSError, ValueError):
            pass
    if isinstance(ds.items[0], np.ndarray):
        out = prep.batch(np.stack(ds.items) if len(ds.items) else np.zeros((0,)), progress=progress)
    else:
        out = _read_and_prepare(ds, prep, progress)
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, out)
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home must not stop training
    return out


def _read_and_prepare(ds: Dataset, prep: Any, progress: bool | None) -> np.ndarray:
    from tqdm.auto import tqdm

    from meddx.io import read_image

    out = np.empty((len(ds), *prep.output_shape), dtype=np.float32)
    show = progress if progress is not None else (len(ds) >= 200 and sys.stderr.isatty())
    for i, path in enumerate(tqdm(ds.items, desc="reading", unit="img", disable=not show, leave=False)):
        img = read_image(path)
        if img.is_sequence:
            raise InputError("is a sequence (video / 4D series), not a single image", path)
        try:
            out[i] = prep(img)
        except MeddxError:
            raise
        except ValueError as exc:
            raise InputError(f"cannot preprocess: {exc}", path) from None
    return out


def load_masks(ds: Dataset, size: tuple[int, ...]) -> np.ndarray | None:
    """Binary masks resized (nearest) to `size`, or None when the dataset has no masks."""
    if ds.masks is None:
        return None
    from meddx.io import read_image
    from meddx.transforms.preprocess import Resize

    resize = Resize(size, order=0, anti_alias=False)
    out = np.zeros((len(ds), *size), dtype=np.uint8)
    for i, m in enumerate(ds.masks):
        if m is None:
            continue
        arr = read_image(m).array
        if arr.ndim > len(size):
            arr = arr.max(axis=-1)
        out[i] = (np.asarray(resize(arr > 0)) > 0).astype(np.uint8)
    return out
