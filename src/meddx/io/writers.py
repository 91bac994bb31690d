"""`write_nifti`: masks, heatmaps and volumes to NIfTI, keeping the source geometry, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io.image import Image
from meddx.utils import atomic_path


def _ras_affine(image: Image) -> np.ndarray:
    """NIfTI affine for (x, y, z) voxel indices; 2D images get their plane normal as 3rd axis."""
    if image.spatial_ndim == 3:
        return image.affine_ras_xyz()
    d = np.asarray(image.direction, dtype=float).reshape(3, -1)[:, :2]
    normal = np.cross(d[:, 1], d[:, 0])  # x cross y in LPS (numpy axes 1 and 0)
    if np.linalg.norm(normal) < 1e-6:
        normal = np.array([0.0, 0.0, 1.0])
    lps = np.eye(4)
    lps[:3, 0] = d[:, 1] * image.spacing[1]  # NIfTI i = numpy x
    lps[:3, 1] = d[:, 0] * image.spacing[0]  # NIfTI j = numpy y
    lps[:3, 2] = normal / np.linalg.norm(normal)
    lps[:3, 3] = image.origin[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti(image_or_array: Image | np.ndarray, path: str | Path, like: Image | None = None) -> Path:
    """Write an Image (or an array on the grid of `like`) to .nii/.nii.gz; returns the path.

    Arrays are in numpy order like `Image.array`; bool becomes uint8, float64 float32.
    """
    import nibabel as nib

    target = Path(path)
    if isinstance(image_or_array, Image):
        image = image_or_array
    else:
        arr = np.asarray(image_or_array)
        if like is not None:
            if tuple(arr.shape[: like.spatial_ndim]) != like.spatial_shape and \
                    tuple(arr.shape[1: 1 + like.spatial_ndim]) != like.spatial_shape:
                raise InputError(f"array shape {arr.shape} does not match the image grid {like.spatial_shape}", target)
            seq = tuple(arr.shape[: like.spatial_ndim]) != like.spatial_shape
            image = like.with_array(arr, is_sequence=seq, has_channels=arr.ndim > like.spatial_ndim + seq)
        else:
            nd = 3 if arr.ndim >= 3 else 2
            image = Image(arr, spatial_ndim=nd, has_channels=arr.ndim > 3)
    data = np.asarray(image.array)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    elif data.dtype == np.int64:
        data = data.astype(np.int32)
    # numpy order -> NIfTI (x, y, z[, t][, c])
    n = image.spatial_ndim
    lead = 1 if image.is_sequence else 0
    spatial_axes = list(range(lead, lead + n))[::-1]
    axes = spatial_axes + ([0] if image.is_sequence else []) + ([data.ndim - 1] if image.has_channels else [])
    out = data.transpose(axes)
    if n == 2:
        out = out.reshape(out.shape[:2] + (1,) + out.shape[2:])
    if image.has_channels:  # NIfTI keeps vector components in the 5th dimension
        c = out.shape[-1]
        out = out.reshape(out.shape[:-1] + ((1,) if not image.is_sequence else ()) + (c,))
    affine = _ras_affine(image)
    nii = nib.Nifti1Image(np.ascontiguousarray(out), affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nii.header.set_xyzt_units("mm", "sec")
    name = target.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise InputError("NIfTI output name must end with .nii or .nii.gz", target)
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    with atomic_path(target, suffix=suffix) as tmp:
        nib.save(nii, str(tmp))
    return target
