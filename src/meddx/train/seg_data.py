"""Segmentation data: DATA with masks (manifest `mask` column or image/<name>_mask pairs), one case read as
(normalised image, mask in the image's geometry), masks at the model's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.data.datasets import Dataset
from meddx.errors import DataError, InputError
from meddx.train.config import SLICE_STACK_MIN_SLICES


def load_segmentation_dataset(data: str | Path | Dataset) -> Dataset:
    """DATA for segmentation: a Dataset, a manifest with a `mask` column, or a paired folder."""
    if isinstance(data, Dataset):
        ds = data
    else:
        from meddx.data.datasets import load_dataset
        from meddx.data.lgg import is_paired_folder, paired_folder_dataset

        p = Path(data)
        if not p.exists():
            raise InputError("no such file or folder", p)
        ds = paired_folder_dataset(p) if is_paired_folder(p) else load_dataset(p)
    if ds.masks is None or not any(m is not None for m in ds.masks):
        raise DataError("segmentation needs masks: a manifest `mask` column or image/<name>_mask pairs", ds.source)
    if ds.kind == "npz":
        raise DataError("segmentation from .npz is not supported; use a manifest with a mask column", ds.source)
    return ds


def is_slice_stacks(ds: Dataset) -> bool:
    """Whether DATA's 2D cases are slices of stacks: patient IDs given and patients holding a median of at least
    SLICE_STACK_MIN_SLICES cases (LGG MR slices), as opposed to one image per patient (e.g. dermoscopy)."""
    if ds.patient_ids is None or not len(ds.patient_ids):
        return False
    _, counts = np.unique(np.asarray(ds.patient_ids, dtype=str), return_counts=True)
    return bool(np.median(counts) >= SLICE_STACK_MIN_SLICES)


def read_pair(image_path: str, mask_path: str | None, prep: Any, native: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """(normalised image, binary mask in the image's geometry, Image) for one case."""
    from meddx.io import read_image

    img = read_image(image_path)
    spatial = tuple(int(s) for s in img.spatial_shape)
    if mask_path is None:
        truth = np.zeros(spatial, dtype=bool)
    else:
        m = np.asarray(read_image(mask_path).array)
        if m.ndim > len(spatial):
            m = m.max(axis=-1)
        if m.shape != spatial:
            raise InputError(f"mask shape {m.shape} differs from its image's {spatial}", mask_path)
        truth = m > 0
    x = native_prep(prep, spatial)(img) if native else prep(img)
    return x, truth, img


def native_prep(prep: Any, spatial: Sequence[int]) -> Any:
    """The run's preprocessing without resizing (3D volumes keep their native grid)."""
    from meddx.transforms.preprocess import Preprocessing

    cfg = dict(prep.get_config())
    cfg.update(image_size=list(spatial), spacing=None, crop=None, fit="stretch")
    return Preprocessing.from_config(cfg)


def spacing_of(img: Any) -> tuple[float, ...] | None:
    """Physical spacing when the file carries geometry (plain PNG/TIFF pixels are unitless)."""
    known = img.has_geometry or any(s != 1.0 for s in img.spacing[: img.spatial_ndim])
    return tuple(float(s) for s in img.spacing[: img.spatial_ndim]) if known else None


def resize_array(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(shape):
        return arr
    return resize(arr, tuple(shape), order=order, anti_aliasing=False, preserve_range=True)


def masks_at(ds: Dataset, size: tuple[int, ...]) -> np.ndarray:
    from meddx.transforms.prepare import load_masks

    m = load_masks(ds, size)
    return np.zeros((len(ds), *size), np.uint8) if m is None else m
