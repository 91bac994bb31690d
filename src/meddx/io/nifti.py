"""NIfTI (.nii, .nii.gz, Analyze .hdr/.img) with nibabel, converted to the `Image` conventions.

NIfTI indexes voxels (i, j, k[, t]) and maps them to RAS millimetres; an `Image` stores numpy
order (z, y, x) and LPS geometry. The voxel order is kept as stored (no reorientation), so a
NIfTI and an NRRD copy of the same volume give identical arrays and geometry.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io.image import Image

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def _geometry_from_affine(affine: np.ndarray, n_spatial: int) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """RAS (i, j, k) affine -> (spacing, origin, direction) in numpy-order LPS terms."""
    from meddx.io._common import clean

    m = _LPS_FROM_RAS @ np.asarray(affine, dtype=float)[:3, :3]
    cols = m[:, :n_spatial][:, ::-1]  # numpy axis 0 is the last NIfTI index axis
    spacing = np.linalg.norm(cols, axis=0)
    spacing[spacing == 0] = 1.0
    direction = cols / spacing[None, :]
    origin = _LPS_FROM_RAS @ np.asarray(affine, dtype=float)[:3, 3]
    return clean(spacing), tuple(float(o) for o in origin), direction


def read_nifti(path: str | Path, max_voxels: int = 2**31) -> Image:
    """NIfTI -> Image: 2D (y, x), 3D (z, y, x), 4D sequence (t, z, y, x), 5D vector -> channels."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    from meddx.io._common import check_size

    p = Path(path)
    try:
        img = nib.load(str(p))
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read NIfTI: {exc}", p) from None
    shape = tuple(int(s) for s in img.shape)
    check_size(shape, max_voxels, p)
    if any(s <= 0 for s in shape):
        raise InputError(f"NIfTI has an empty dimension {shape}: no voxels to read", p)
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        raise InputError("NIfTI affine (voxel-to-world transform) holds NaN or infinite values: the geometry is "
                         "unusable", p)
    cols = [affine[:3, k] for k in range(min(len(shape), 3)) if np.linalg.norm(affine[:3, k]) > 0 or shape[k] > 1]
    if cols and np.linalg.matrix_rank(np.stack(cols, axis=1)) < len(cols):  # a zero-spacing singleton axis is fine
        raise InputError("NIfTI affine is singular (a voxel axis has zero length or two axes coincide): the "
                         "geometry is unusable", p)
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read NIfTI voxel data (truncated file?): {exc}", p) from None
    while data.ndim > 3 and data.shape[-1] == 1:  # trailing singleton dims (x, y, z, 1, 1)
        data = data[..., 0]
    is_sequence = has_channels = False
    if data.ndim == 2:
        n_spatial, arr = 2, data.T
    elif data.ndim == 3:
        n_spatial, arr = 3, data.transpose(2, 1, 0)
    elif data.ndim == 4:
        n_spatial, arr, is_sequence = 3, data.transpose(3, 2, 1, 0), True
    elif data.ndim == 5 and data.shape[3] == 1:
        n_spatial, arr, has_channels = 3, data[:, :, :, 0, :].transpose(2, 1, 0, 3), True
    else:
        raise InputError(f"unsupported NIfTI shape {shape}", p)
    spacing, origin, direction = _geometry_from_affine(img.affine, n_spatial)
    meta = {"format": "NIfTI", "orientation_stored": "".join(nib.aff2axcodes(img.affine))}
    header = img.header
    try:
        units = header.get_xyzt_units()
        if is_sequence and units[1] != "unknown":
            meta["time_step"] = float(header.get_zooms()[3])
            meta["time_units"] = units[1]
    except (AttributeError, IndexError, TypeError):
        pass
    return Image(np.ascontiguousarray(arr), spacing=spacing, origin=origin, direction=direction,
                 modality="OT", spatial_ndim=n_spatial, has_channels=has_channels,
                 is_sequence=is_sequence, has_geometry=True, source=str(p), metadata=meta)
