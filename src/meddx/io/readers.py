"""`read_image`: one entry point for every supported format, dispatching on extension and magic bytes.

Every user mistake (missing path, empty folder, wrong or truncated file, unsupported format,
NaN values, an image over `max_voxels`) raises `meddx.errors.InputError` with one line naming
the path -- never a library traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io._common import DEFAULT_MAX_VOXELS, check_size
from meddx.io.image import Image

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
ITK_SUFFIXES = frozenset({".nrrd", ".nhdr", ".mha", ".mhd"})


def _sniff(path: Path) -> str | None:
    """Format from the first bytes, for files without (or with an unknown) extension."""
    from meddx.io.dicom import looks_like_dicom

    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if looks_like_dicom(path):
        return "dicom"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")):
        return "raster"
    if head.startswith(b"GIF8"):
        return "gif"
    if head.startswith(b"NRRD") or head.startswith(b"ObjectType"):
        return "itk"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") \
            or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"\x1a\x45\xdf\xa3"):
        return "video"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return None


def detect_format(path: str | Path) -> str:
    """'dicom' | 'nifti' | 'itk' | 'raster' | 'gif' | 'video' | 'npy' | 'dicom_folder', or InputError."""
    from meddx.io.dicom import DICOM_SUFFIXES
    from meddx.io.video import VIDEO_SUFFIXES

    p = Path(path)
    if p.is_dir():
        return "dicom_folder"
    name = p.name.lower()
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if suffix == ".gif":
        return "gif"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".npy":
        return "npy"
    if suffix == ".npz":
        raise InputError("an .npz archive is a dataset, not an image (use it as DATA, or meddx.io.npz.load_npz_arrays)", p)
    kind = _sniff(p)
    if kind is not None:
        return kind
    if suffix:
        raise InputError(f"unsupported file type '{suffix}' (supported: DICOM, NIfTI, NRRD/MHA, PNG/JPEG/TIFF/BMP, "
                         "GIF, MP4/AVI/MOV/MPEG)", p)
    raise InputError("unsupported file: no extension and not recognised as DICOM or any image format", p)


def _read_npy(p: Path, max_voxels: int) -> Image:
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read .npy array: {str(exc).splitlines()[0]}", p) from None
    check_size(arr.shape, max_voxels, p)
    arr = np.array(arr)
    if arr.ndim == 2:
        return Image(arr, spatial_ndim=2, source=str(p))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 4:
        return Image(np.ascontiguousarray(arr[..., :3]), spatial_ndim=2, has_channels=True, source=str(p))
    if arr.ndim == 3:
        return Image(arr, spatial_ndim=3, source=str(p))
    if arr.ndim == 4 and arr.shape[-1] <= 4:
        return Image(arr, spatial_ndim=3, has_channels=True, source=str(p))
    if arr.ndim == 4:
        return Image(arr, spatial_ndim=3, is_sequence=True, source=str(p))
    raise InputError(f"unsupported array shape {arr.shape} (expected 2D, 3D or 4D)", p)


def read_image(path: str | Path, series_uid: str | None = None, allow_nan: bool = False,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """Read any supported image, volume, DICOM series folder or video into an `Image`.

    `series_uid` picks one series of a DICOM folder (default: the one with most instances);
    `allow_nan=False` refuses images with NaN/inf values; `max_voxels` bounds memory use.
    """
    p = Path(path).expanduser()
    try:
        return _read_image(p, series_uid, allow_nan, max_voxels)
    except MemoryError:
        raise InputError("not enough memory to read this image: read fewer inputs at once, lower max_voxels, or "
                         "use a machine with more memory", p) from None
    except PermissionError:
        raise InputError("permission denied: cannot read it", p) from None


def _read_image(p: Path, series_uid: str | None, allow_nan: bool, max_voxels: int) -> Image:
    """`read_image` without the memory and permission error translation."""
    if not p.exists():
        raise InputError("no such file or folder", p)
    kind = "dicom_folder"
    if p.is_dir():
        if not any(True for _ in p.iterdir()):
            raise InputError("folder contains no readable images (it is empty)", p)
        from meddx.io.dicom import read_dicom_folder

        image = read_dicom_folder(p, series_uid=series_uid, max_voxels=max_voxels)
    else:
        if p.stat().st_size == 0:
            raise InputError("file is empty", p)
        kind = detect_format(p)
        if kind == "dicom":
            from meddx.io.dicom import read_dicom_file

            image = read_dicom_file(p, max_voxels=max_voxels)
        elif kind == "nifti":
            from meddx.io.nifti import read_nifti

            image = read_nifti(p, max_voxels=max_voxels)
        elif kind == "itk":
            from meddx.io.itk import read_itk

            image = read_itk(p, max_voxels=max_voxels)
        elif kind == "raster":
            from meddx.io.raster import read_raster

            image = read_raster(p, max_voxels=max_voxels)
        elif kind == "gif":
            image = _read_gif(p, max_voxels)
        elif kind == "video":
            from meddx.io.video import read_video

            image = read_video(p, max_voxels=max_voxels)
        else:
            image = _read_npy(p, max_voxels)
    # DICOM integer pixel data rescaled by finite factors cannot hold NaN: skip the scan there.
    from_dicom = p.is_dir() or kind == "dicom"
    if not allow_nan and (not from_dicom or image.metadata.get("float_pixel_data")):
        check_finite(image.array, p)
    return image


def _read_gif(p: Path, max_voxels: int) -> Image:
    """Animated GIF -> sequence (via the video module); a still GIF -> 2D image."""
    from meddx.io.video import read_video

    image = read_video(p, max_voxels=max_voxels)
    if image.n_frames == 1:
        return image.with_array(image.array[0], is_sequence=False)
    return image


def check_finite(array: np.ndarray, path: str | Path) -> None:
    """Raise InputError counting NaN / infinite values (floating arrays only)."""
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return
    n_nan = int(np.count_nonzero(np.isnan(array)))
    n_inf = int(np.count_nonzero(np.isinf(array)))
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN values")
    if n_inf:
        parts.append(f"{n_inf} infinite values")
    raise InputError(f"image contains {' and '.join(parts)} (pass allow_nan=True to accept them)", path)
