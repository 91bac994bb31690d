"""MedMNIST-style `.npz` archives: `{split}_images` / `{split}_labels` arrays (no pickles)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from meddx.errors import DataError, InputError

SPLITS = ("train", "val", "test")


def load_npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a MedMNIST-style npz, checked: >= 1 images/labels pair, lengths and shapes agree."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("expected an .npz file, got a folder", p)
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except MemoryError:
        raise InputError("not enough memory for its arrays (do the headers declare absurd shapes?)", p) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in msg.lower():
            raise InputError("npz holds pickled objects, which are refused for safety", p) from None
        raise InputError(f"not a readable .npz archive: {msg}", p) from None
    if not isinstance(arrays, dict) or not arrays:
        raise DataError("npz holds no arrays", p)
    pairs = [s for s in SPLITS if f"{s}_images" in arrays and f"{s}_labels" in arrays]
    if not pairs:
        expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in expected if k not in arrays]
        raise DataError(f"npz has no {{split}}_images/{{split}}_labels pair; missing keys: {', '.join(missing)} "
                        f"(found: {', '.join(sorted(arrays))})", p)
    for s in SPLITS:
        has_i, has_l = f"{s}_images" in arrays, f"{s}_labels" in arrays
        if has_i != has_l:
            present, absent = (f"{s}_images", f"{s}_labels") if has_i else (f"{s}_labels", f"{s}_images")
            raise DataError(f"npz has '{present}' but is missing key '{absent}'", p)
    shapes = {}
    for s in pairs:
        images, labels = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if images.ndim < 3:
            raise DataError(f"'{s}_images' has shape {images.shape}; expected (n, H, W[, ...])", p)
        if len(images) != len(labels):
            raise DataError(f"'{s}_images' has {len(images)} cases but '{s}_labels' has {len(labels)}", p)
        if images.dtype == object or labels.dtype == object:
            raise DataError(f"'{s}' arrays have dtype object", p)
        shapes[s] = tuple(images.shape[1:])
    if len(set(shapes.values())) > 1:
        raise DataError(f"splits have different image shapes: {shapes}", p)
    return arrays
