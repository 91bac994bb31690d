"""NRRD / MetaImage (.nrrd, .nhdr, .mha, .mhd) through SimpleITK.

SimpleITK's GetArrayFromImage already returns numpy order (z, y, x) and its origin/direction
are LPS, so only the axis order of `direction` and `spacing` has to be reversed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io.image import Image


def read_itk(path: str | Path, max_voxels: int = 2**31) -> Image:
    """Read any SimpleITK-supported volume into an Image (2D, 3D, 4D sequence, vector -> channels)."""
    import SimpleITK as sitk

    from meddx.io._common import check_size, clean, quiet_stderr

    p = Path(path)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings would go straight to stderr
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        with quiet_stderr():
            reader.ReadImageInformation()
            size = tuple(int(s) for s in reader.GetSize())
            ncomp = int(reader.GetNumberOfComponents())
            check_size(size + ((ncomp,) if ncomp > 1 else ()), max_voxels, p)
            img = reader.Execute()
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip().startswith("Description")), "")
        raise InputError(f"cannot read image with SimpleITK: {first or str(exc).splitlines()[-1]}", p) from None
    arr = sitk.GetArrayFromImage(img)
    dim = img.GetDimension()
    n_spatial = min(dim, 3)
    direction_itk = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)[:n_spatial, :n_spatial]
    spacing = tuple(img.GetSpacing())[:n_spatial][::-1]
    origin = list(img.GetOrigin())[:n_spatial]
    direction = np.zeros((3, n_spatial))
    direction[:n_spatial, :] = direction_itk[:, ::-1]
    origin += [0.0] * (3 - len(origin))
    meta = {"format": p.suffix.lstrip(".").upper() or "ITK"}
    modality = "OT"
    for key in ("modality", "Modality"):
        if img.HasMetaDataKey(key):
            modality = img.GetMetaData(key).strip() or "OT"
    return Image(arr, spacing=clean(spacing), origin=tuple(origin), direction=direction,
                 modality=modality, spatial_ndim=n_spatial, has_channels=ncomp > 1,
                 is_sequence=dim == 4, has_geometry=True, source=str(p), metadata=meta)
