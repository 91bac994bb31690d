"""DICOM reading with pydicom: single files, series folders, 4D series and multi-frame objects.

Geometry follows the `Image` conventions (LPS, numpy axis order): slices are ordered by the
projection of ImagePositionPatient on the slice normal (never by file name), the slice spacing
comes from those positions (never from SliceThickness), and instances sharing a position
(fMRI, cardiac phases) become a time axis. Pixel values are rescaled (CT in HU, float32),
MONOCHROME1 is inverted so that higher is brighter, YBR colour becomes RGB. Metadata is
de-identified (see `meddx.io.deid`).

Longer than 500 lines on purpose: one reader with many cases (series sorting along the normal, multi-frame,
4D, compressed transfer syntaxes, header checks before allocation) sharing private helpers; split, it would scatter
one format's rules over several files.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.io._common import DEFAULT_MAX_VOXELS, check_size, clean
from meddx.io.deid import dicom_refs, safe_metadata
from meddx.io.image import Image

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
_POSITION_TOL_MM = 0.01  # instances closer than this along the normal share a position
_PARSE_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError,
                 IndexError, struct.error, NotImplementedError, RuntimeError)


# -- file detection / header parsing ---------------------------------------------------------

def looks_like_dicom(path: str | Path) -> bool:
    """True for a Part-10 file ("DICM" at byte 128) or a raw dataset starting with a group 2/8 tag."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00"):
        element = int.from_bytes(head[2:4], "little")
        return element < 0x1000
    return False


def _dcmread(path: Path, *, stop_before_pixels: bool = False, checked: bool = False) -> Any:
    """pydicom.dcmread with every parse failure turned into one InputError line."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not checked and not looks_like_dicom(path):
        raise InputError("not a DICOM file (no DICM marker or DICOM header)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputError("not a DICOM file", path) from None
    except _PARSE_ERRORS as exc:
        raise InputError(f"cannot parse DICOM header (truncated or corrupt?): {exc}", path) from None
    if len(ds) == 0:
        raise InputError("not a DICOM file (empty dataset)", path)
    return ds


def _has_pixels(ds: Any) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _ts(ds: Any, path: Path | None = None) -> Any:
    """The dataset's transfer syntax UID (implicit VR little endian when absent); an UID that is not a known
    transfer syntax is an InputError (pydicom would raise a bare ValueError deep inside)."""
    from pydicom.uid import UID, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        return ImplicitVRLittleEndian
    ts = UID(str(ts))
    if not ts.is_transfer_syntax:
        raise InputError(f"unknown DICOM transfer syntax {str(ts)[:64]!r}: cannot decode its pixel data", path)
    return ts


def _n_frames(ds: Any, path: Path) -> int:
    """NumberOfFrames (1 when absent); a negative or absurd count is an InputError."""
    n = int(_num(ds.get("NumberOfFrames"), 1.0)) or 1
    if n < 1:
        raise InputError(f"DICOM NumberOfFrames {n} is not a frame count", path)
    return n


_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
                "YBR_RCT")


def _check_image_header(ds: Any, rows: int, cols: int, path: Path) -> None:
    """Refuse headers that cannot describe an image: zero rows or columns, unsupported bit depths, an unknown
    photometric interpretation, or PALETTE COLOR (its values are indices; read as grey they would mislead)."""
    if rows <= 0 or cols <= 0:
        raise InputError(f"DICOM image has {rows} rows and {cols} columns: no pixels to read", path)
    bits = int(_num(ds.get("BitsAllocated"), 16))
    if bits not in (1, 8, 16, 32, 64):
        raise InputError(f"DICOM BitsAllocated {bits} is not a valid pixel size (1, 8, 16, 32 or 64)", path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip()
    if photometric == "PALETTE COLOR":  # stored values are palette indices, not intensities
        raise InputError("DICOM PALETTE COLOR images are not supported (their values are colour-table indices, "
                         "not intensities): convert the image to RGB", path)
    if photometric not in _PHOTOMETRIC:
        raise InputError(f"unsupported DICOM PhotometricInterpretation {photometric[:32]!r}", path)


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _tm_seconds(value: Any) -> float:
    """DICOM TM 'HHMMSS.frac' (or 'HH:MM:SS') -> seconds since midnight; 0 when absent."""
    s = str(value or "").replace(":", "").strip()
    if not s:
        return 0.0
    try:
        hh = int(s[0:2]) if len(s) >= 2 else 0
        mm = int(s[2:4]) if len(s) >= 4 else 0
        ss = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return 0.0
    return hh * 3600 + mm * 60 + ss


# -- fast per-instance fields (series reads touch ~20 tags of every file) ---------------------
# Parsing the raw element bytes directly avoids pydicom's per-value object construction, which
# dominates the cost of reading a large series.

def _tags() -> dict[str, int]:
    from pydicom.datadict import tag_for_keyword

    names = ("SeriesInstanceUID", "SOPInstanceUID", "SeriesDescription", "ImagePositionPatient",
             "ImageOrientationPatient", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
             "PixelRepresentation", "PhotometricInterpretation", "NumberOfFrames", "RescaleSlope",
             "RescaleIntercept", "AcquisitionNumber", "TemporalPositionIdentifier", "AcquisitionTime",
             "InstanceNumber", "PixelData")
    return {n: int(tag_for_keyword(n)) for n in names}


_TAG_CACHE: dict[str, int] = {}


def _raw_value(ds: Any, name: str) -> Any:
    if not _TAG_CACHE:
        _TAG_CACHE.update(_tags())
    try:
        elem = ds.get_item(_TAG_CACHE[name])
    except KeyError:
        return None
    return None if elem is None else elem


def _raw_str(ds: Any, name: str) -> str | None:
    elem = _raw_value(ds, name)
    if elem is None:
        return None
    v = elem.value
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("latin-1").strip(" \x00") or None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip() or None


def _raw_floats(ds: Any, name: str) -> list[float] | None:
    text = _raw_str(ds, name)
    if not text:
        return None
    try:
        return [float(x) for x in text.split("\\")]
    except ValueError:
        return None


def _raw_us(ds: Any, name: str, default: int) -> int:
    elem = _raw_value(ds, name)
    if elem is None or elem.value is None:
        return default
    v = elem.value
    if isinstance(v, bytes):
        if len(v) < 2:
            return default
        return int.from_bytes(v[:2], "little" if getattr(elem, "is_little_endian", True) else "big")
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _instance_info(ds: Any) -> dict[str, Any]:
    """The fields a series read needs from one instance, parsed from raw bytes."""
    ipp = _raw_floats(ds, "ImagePositionPatient")
    iop = _raw_floats(ds, "ImageOrientationPatient")
    return {
        "series": _raw_str(ds, "SeriesInstanceUID") or "unknown",
        "sop": _raw_str(ds, "SOPInstanceUID") or "",
        "description": _raw_str(ds, "SeriesDescription") or "",
        "ipp": np.asarray(ipp) if ipp is not None and len(ipp) == 3 else None,
        "iop": iop if iop is not None and len(iop) == 6 else None,
        "rows": _raw_us(ds, "Rows", 0),
        "cols": _raw_us(ds, "Columns", 0),
        "spp": _raw_us(ds, "SamplesPerPixel", 1) or 1,
        "bits": _raw_us(ds, "BitsAllocated", 16),
        "stored": _raw_us(ds, "BitsStored", _raw_us(ds, "BitsAllocated", 16)),
        "pixrep": _raw_us(ds, "PixelRepresentation", 0),
        "photometric": _raw_str(ds, "PhotometricInterpretation") or "",
        "frames": max(int(_num(_raw_str(ds, "NumberOfFrames"), 1.0)), 1),
        "slope": _raw_str(ds, "RescaleSlope"),
        "intercept": _raw_str(ds, "RescaleIntercept"),
        "time": (_num(_raw_str(ds, "AcquisitionNumber")), _num(_raw_str(ds, "TemporalPositionIdentifier")),
                 _tm_seconds(_raw_str(ds, "AcquisitionTime")), _num(_raw_str(ds, "InstanceNumber"))),
    }


def _fast_pixels(ds: Any, info: dict[str, Any], path: Path) -> np.ndarray | None:
    """Uncompressed little-endian monochrome pixel data straight from the raw bytes, else None."""
    ts = _ts(ds, path)
    if ts.is_compressed or not ts.is_little_endian:
        return None
    rows, cols, bits, spp, nframes = info["rows"], info["cols"], info["bits"], info["spp"], info["frames"]
    if spp != 1 or bits not in (8, 16, 32) or not info["photometric"].startswith("MONOCHROME") \
            or (info["stored"] != bits and info["pixrep"]):
        return None
    elem = _raw_value(ds, "PixelData")
    data = getattr(elem, "value", None)
    if not isinstance(data, bytes):
        return None
    n = rows * cols * nframes
    if len(data) < n * (bits // 8):
        raise InputError(f"truncated DICOM: pixel data ends early ({len(data)} of {n * (bits // 8)} bytes)", path)
    dtype = np.dtype(f"<{'i' if info['pixrep'] else 'u'}{bits // 8}")
    return np.frombuffer(data, dtype=dtype, count=n).reshape(nframes, rows, cols)

# -- pixel data -----------------------------------------------------------------------------

def _stored_pixels(ds: Any, path: Path) -> np.ndarray:
    """All frames as stored, shape (frames, rows, cols[, samples]); YBR converted to RGB."""
    if not _has_pixels(ds):
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
        raise InputError(f"DICOM file holds no image (no pixel data; SOP class {sop})", path)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16))
    except (AttributeError, TypeError, ValueError):
        raise InputError("DICOM image without valid Rows/Columns/BitsAllocated", path) from None
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    nframes = _n_frames(ds, path)
    ts = _ts(ds, path)
    _check_image_header(ds, rows, cols, path)
    if "PixelData" in ds and not ts.is_compressed:
        n = rows * cols * nframes * spp
        expected = (n + 7) // 8 if bits == 1 else n * (bits // 8)
        got = len(ds.PixelData)
        if got < expected:
            raise InputError(f"truncated DICOM: pixel data ends early ({got} of {expected} bytes)", path)
        pixrep = int(ds.get("PixelRepresentation", 0) or 0)
        stored = int(ds.get("BitsStored", bits) or bits)
        if (ts.is_little_endian and spp == 1 and bits in (8, 16, 32)
                and (stored == bits or pixrep == 0)
                and str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME")):
            dtype = np.dtype(f"<{'i' if pixrep else 'u'}{bits // 8}")
            return np.frombuffer(ds.PixelData, dtype=dtype, count=n).reshape(nframes, rows, cols)
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(ds)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 -- decoder plugins raise anything; one line for the user
        name = getattr(ts, "name", str(ts))
        msg = str(exc).split("\n")[0]
        if "length" in msg.lower() and ("expected" in msg.lower() or "match" in msg.lower()):
            raise InputError(f"truncated DICOM: pixel data ends early ({msg})", path) from None
        raise InputError(f"cannot decode DICOM pixel data ({name}): {msg}", path) from None
    expected_ndim = 2 + (spp > 1)
    if arr.ndim == expected_ndim:
        arr = arr[None]
    return arr


def _rescale_of(item: Any) -> tuple[float, float, bool]:
    """(slope, intercept, present) from a dataset or a PixelValueTransformation item."""
    present = "RescaleSlope" in item or "RescaleIntercept" in item
    return _num(item.get("RescaleSlope"), 1.0) or 1.0, _num(item.get("RescaleIntercept"), 0.0), present


def _frame_group(ds: Any, index: int, name: str) -> Any | None:
    """Functional-group item `name` for frame `index` (per-frame first, then shared)."""
    for seq_name, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq and len(seq) > i:
            sub = seq[i].get(name)
            if sub:
                return sub[0]
    return None


def _invert_base(ds: Any) -> float:
    """MONOCHROME1 inversion: value -> base - value keeps the stored range."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0):
        return -1.0
    return float(2**bits - 1)


def _output_dtype(stored: np.ndarray, rescaled: bool, modality: str) -> np.dtype:
    if rescaled or modality in ("CT", "PT") or np.issubdtype(stored.dtype, np.floating):
        return np.dtype(np.float32)
    return stored.dtype


def _write_frame(dst: np.ndarray, src: np.ndarray, slope: float, intercept: float,
                 invert_base: float | None) -> None:
    """dst[...] = slope * (inverted) src + intercept, in dst's dtype, without Python loops."""
    if invert_base is not None:
        src = invert_base - src.astype(np.float64 if dst.dtype.kind == "f" else np.int64)
    if slope == 1.0 and intercept == 0.0:
        dst[...] = src
    else:
        np.multiply(src, np.float32(slope) if dst.dtype == np.float32 else slope, out=dst, casting="unsafe")
        dst += intercept


# -- geometry --------------------------------------------------------------------------------

def _vec(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _pixel_spacing(ds: Any, frame_item: Any | None = None) -> tuple[tuple[float, float], bool]:
    """(row spacing = along y, column spacing = along x) in mm, and whether it was known."""
    for source in (frame_item, ds):
        if source is None:
            continue
        for kw in ("PixelSpacing", "ImagerPixelSpacing"):
            ps = _vec(source.get(kw), 2) if source.get(kw) is not None else None
            if ps is not None and np.all(ps > 0):
                return (float(ps[0]), float(ps[1])), True
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        r = regions[0]
        if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3:
            dx, dy = _num(r.get("PhysicalDeltaX")), _num(r.get("PhysicalDeltaY"))
            if dx > 0 and dy > 0:  # centimetres -> mm
                return (abs(dy) * 10.0, abs(dx) * 10.0), True
    return (1.0, 1.0), False


def _orientation(value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """IOP -> (row direction = +x axis, column direction = +y axis, normal), unit vectors."""
    iop = _vec(value, 6) if value is not None else None
    if iop is None:
        return None
    r, c = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6:
        return None
    r, c = r / nr, c / nc
    n = np.cross(r, c)
    if np.linalg.norm(n) < 1e-6:
        return None
    return r, c, n / np.linalg.norm(n)


def _arrange(proj: np.ndarray, time_keys: Sequence[tuple[float, ...]], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Group instances by position along the normal, then by time.

    Returns (index array of shape (n_t, n_z) into the inputs, position of each z group).
    """
    order = np.argsort(proj, kind="stable")
    sp = proj[order]
    breaks = np.nonzero(np.diff(sp) > _POSITION_TOL_MM)[0] + 1
    groups = np.split(order, breaks)
    counts = {len(g) for g in groups}
    if len(counts) != 1:
        sizes = sorted(counts)
        raise InputError(
            f"inconsistent series: {len(groups)} slice positions hold different numbers of instances "
            f"({sizes[0]} to {sizes[-1]}); pass series_uid or remove duplicates", path)
    n_t = counts.pop()
    if n_t > 1:
        groups = [sorted(g.tolist(), key=lambda i: time_keys[i]) for g in groups]
    idx = np.asarray(groups, dtype=np.int64).reshape(len(groups), n_t).T  # (t, z)
    zpos = np.asarray([proj[g].mean() for g in np.asarray(groups).reshape(len(groups), n_t)])
    return idx, zpos


def _slice_spacing(zpos: np.ndarray, meta: dict[str, Any], ds: Any) -> float:
    if len(zpos) < 2:
        return _num(ds.get("SpacingBetweenSlices"), 0.0) or _num(ds.get("SliceThickness"), 1.0) or 1.0
    d = np.diff(zpos)
    spacing = float(np.median(d))
    if spacing > 0 and float(np.max(np.abs(d - spacing))) > 0.01 * spacing + 1e-3:
        meta["slice_spacing_irregular"] = True
        meta["slice_spacing_range_mm"] = [round(float(d.min()), 4), round(float(d.max()), 4)]
    return spacing


# -- single file -----------------------------------------------------------------------------

def read_dicom_file(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """One DICOM file: 2D image, multi-frame volume (per-frame positions) or cine sequence."""
    p = Path(path)
    ds = _dcmread(p)
    return _image_from_dataset(ds, p, max_voxels)


def _image_from_dataset(ds: Any, p: Path, max_voxels: int) -> Image:
    if not _has_pixels(ds):
        _stored_pixels(ds, p)  # raises the clear "no pixel data" error
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    nframes = _n_frames(ds, p)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError("DICOM image without valid Rows/Columns", p) from None
    _check_image_header(ds, rows, cols, p)
    check_size((nframes, rows, cols, spp), max_voxels, p)
    stored = _stored_pixels(ds, p)
    modality = str(ds.get("Modality", "") or "OT")
    meta = safe_metadata(ds)
    sop = str(ds.get("SOPInstanceUID", ""))
    color = spp > 1
    photometric = str(ds.get("PhotometricInterpretation", ""))
    invert = None if color or photometric != "MONOCHROME1" else _invert_base(ds)
    if invert is not None:
        meta["monochrome1_inverted"] = True
    if color and photometric.startswith("YBR"):
        meta["converted_to_rgb"] = True

    # Per-frame rescale (enhanced objects) or one for the whole object.
    slopes = np.ones(nframes)
    intercepts = np.zeros(nframes)
    rescaled = False
    if not color:
        s, i, rescaled = _rescale_of(ds)
        slopes[:], intercepts[:] = s, i
        for f in range(nframes):
            item = _frame_group(ds, f, "PixelValueTransformationSequence")
            if item is not None:
                s, i, present = _rescale_of(item)
                if present:
                    slopes[f], intercepts[f], rescaled = s, i, True
        if "DoseGridScaling" in ds:
            slopes *= _num(ds.get("DoseGridScaling"), 1.0) or 1.0
            rescaled = True
    out_dtype = _output_dtype(stored, rescaled, modality)
    if np.issubdtype(stored.dtype, np.floating):
        meta["float_pixel_data"] = True

    def convert(frame_index: Sequence[int]) -> np.ndarray:
        out = np.empty((len(frame_index),) + stored.shape[1:], dtype=out_dtype)
        for k, f in enumerate(frame_index):
            _write_frame(out[k], stored[f], float(slopes[f]), float(intercepts[f]), invert)
        return out

    common = dict(modality=modality, source=str(p), metadata=meta, has_channels=color)

    # --- frame positions: enhanced per-frame groups or RT dose grid offsets ---
    positions: list[np.ndarray] | None = None
    plane = None
    frame_item_ps = None
    if nframes > 1:
        pos_items = [_frame_group(ds, f, "PlanePositionSequence") for f in range(nframes)]
        if all(it is not None and _vec(it.get("ImagePositionPatient"), 3) is not None for it in pos_items):
            positions = [_vec(it.get("ImagePositionPatient"), 3) for it in pos_items]
            ori = _frame_group(ds, 0, "PlaneOrientationSequence")
            plane = _orientation(ori.get("ImageOrientationPatient") if ori is not None else ds.get("ImageOrientationPatient"))
            frame_item_ps = _frame_group(ds, 0, "PixelMeasuresSequence")
        elif "GridFrameOffsetVector" in ds and ds.get("ImagePositionPatient") is not None:
            plane = _orientation(ds.get("ImageOrientationPatient"))
            ipp = _vec(ds.get("ImagePositionPatient"), 3)
            offsets = [float(v) for v in ds.GridFrameOffsetVector]
            if plane is not None and ipp is not None and len(offsets) == nframes:
                positions = [ipp + o * plane[2] for o in offsets]
    if positions is not None and plane is not None:
        r, c, n = plane
        (psy, psx), _ = _pixel_spacing(ds, frame_item_ps)
        proj = np.asarray([float(np.dot(x, n)) for x in positions])
        keys = []
        for f in range(nframes):
            content = _frame_group(ds, f, "FrameContentSequence")
            keys.append((_num(content.get("TemporalPositionIndex")) if content is not None else 0.0,
                         _tm_seconds(str(content.get("FrameAcquisitionDateTime") or "")[8:]) if content is not None else 0.0,
                         float(f)))
        idx, zpos = _arrange(proj, keys, p)
        n_t, n_z = idx.shape
        dz = _slice_spacing(zpos, meta, ds)
        arr = convert(idx.ravel().tolist()).reshape((n_t, n_z) + stored.shape[1:])
        if n_t == 1:
            arr = arr[0]
        meta["dicom_refs"] = dicom_refs(ds, [sop], frame_numbers=(idx + 1).tolist() if n_t > 1 else (idx[0] + 1).tolist())
        return Image(arr, spacing=clean((dz, psy, psx)), origin=tuple(positions[int(idx[0, 0])]),
                     direction=np.stack([n, c, r], axis=1), spatial_ndim=3, is_sequence=n_t > 1,
                     has_geometry=True, **common)

    (psy, psx), known_ps = _pixel_spacing(ds)
    plane = _orientation(ds.get("ImageOrientationPatient"))
    ipp = _vec(ds.get("ImagePositionPatient"), 3) if ds.get("ImagePositionPatient") is not None else None
    geometry: dict[str, Any] = dict(spacing=clean((psy, psx)))
    if plane is not None and ipp is not None:
        geometry.update(origin=tuple(ipp), direction=np.stack([plane[1], plane[0]], axis=1),
                        has_geometry=True)
    arr = convert(range(nframes))
    if nframes == 1:
        meta["dicom_refs"] = dicom_refs(ds, [sop])
        return Image(arr[0], spatial_ndim=2, **geometry, **common)
    # cine / multi-frame without per-frame positions: a sequence of 2D frames
    meta["dicom_refs"] = dicom_refs(ds, [sop], frame_numbers=list(range(1, nframes + 1)))
    if "FrameTime" in ds:
        meta["frame_time_ms"] = _num(ds.get("FrameTime"))
    return Image(arr, spatial_ndim=2, is_sequence=True, **geometry, **common)


# -- series folder ---------------------------------------------------------------------------

_UNREADABLE = object()  # a file that looks like DICOM but cannot be parsed (a damaged slice?)


def _read_candidate(f: Path) -> Any | None:
    """Full dataset of a file in a folder; None when it is not a DICOM image (non-DICOM file, SR, DICOMDIR...);
    `_UNREADABLE` when it looks like DICOM but cannot be parsed."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(f)  # fast path: Part-10 files with the DICM preamble
    except InvalidDicomError:
        if not looks_like_dicom(f):
            return None
        try:
            ds = _dcmread(f, checked=True)
        except InputError:
            return _UNREADABLE
    except _PARSE_ERRORS:
        return _UNREADABLE if looks_like_dicom(f) else None
    if not len(ds) or (not _has_pixels(ds) and "Rows" in ds):
        return _UNREADABLE  # a DICOM file cut inside its header, or an image header whose pixel data is gone
    return ds if len(ds) and _has_pixels(ds) else None


def _check_duplicates(members: list[tuple[Path, Any, dict[str, Any]]], root: Path) -> None:
    """Refuse a series in which two files hold the same SOPInstanceUID (copies would be stacked as extra slices or
    time points)."""
    seen: dict[str, Path] = {}
    dups: list[tuple[Path, Path]] = []
    for f, _, info in members:
        sop = info["sop"]
        if not sop:
            continue
        if sop in seen:
            dups.append((seen[sop], f))
        else:
            seen[sop] = f
    if dups:
        a, b = dups[0]
        raise InputError(f"series holds {len(dups)} duplicated instance(s): the same SOPInstanceUID in "
                         f"{a.relative_to(root)} and {b.relative_to(root)} (remove the copies)", root)


def _integrity_notes(zpos: np.ndarray, unreadable: list[str], meta: dict[str, Any]) -> None:
    """Record in `meta["series_integrity"]` (shown by reports and `meddx info`) what makes a series not one
    contiguous, complete volume: gaps in the slice positions (missing slices) and DICOM files that could not be
    read; `meta["missing_slices"]` counts the slices the gaps leave out."""
    notes = list(meta.get("series_integrity") or [])
    if len(zpos) >= 3:
        d = np.diff(zpos)
        step = float(np.median(d))
        if step > 0:
            gaps = [(i, float(g)) for i, g in enumerate(d) if g > 1.5 * step]
            missing = int(sum(round(g / step) - 1 for _, g in gaps))
            if gaps:
                where = ", ".join(f"after slice {i + 1} ({g:.3g} mm)" for i, g in gaps[:3])
                notes.append(f"{max(missing, 1)} slice(s) missing: gaps in ImagePositionPatient {where} where the "
                             f"spacing is {step:.3g} mm; the volume is not contiguous there")
                meta["missing_slices"] = max(missing, 1)
    if unreadable:
        notes.append(f"{len(unreadable)} DICOM file(s) of the folder could not be read and were left out")
    if notes:
        meta["series_integrity"] = notes


def read_dicom_folder(folder: str | Path, series_uid: str | None = None,
                      max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """A folder holding one or more series: the chosen series as a 3D volume or 4D sequence."""
    root = Path(folder)
    files = sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith("."))
    if not files:
        raise InputError("folder contains no readable images (it is empty)", root)
    members_all: list[tuple[Path, Any, dict[str, Any]]] = []
    skipped: list[str] = []
    unreadable: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            ds = None if f.name.upper() == "DICOMDIR" else _read_candidate(f)
            if ds is None or ds is _UNREADABLE:
                skipped.append(str(f.relative_to(root)))
                if ds is _UNREADABLE:
                    unreadable.append(str(f.relative_to(root)))
                continue
            members_all.append((f, ds, _instance_info(ds)))
    if not members_all:
        raise InputError(f"folder contains no readable images (no DICOM image among {len(files)} files)", root)

    series: dict[str, list[tuple[Path, Any, dict[str, Any]]]] = {}
    for item in members_all:
        series.setdefault(item[2]["series"], []).append(item)
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"series {series_uid} not found; the folder holds {', '.join(sorted(series))}", root)
        chosen = series_uid
    else:
        chosen = max(sorted(series), key=lambda uid: len(series[uid]))
    members = series[chosen]
    series_skipped = [  # no SeriesDescription: free text may identify the patient
        {"uid": uid, "n_files": len(items)} for uid, items in sorted(series.items()) if uid != chosen
    ]
    _check_duplicates(members, root)

    multi = [m for m in members if m[2]["frames"] > 1]
    if len(members) == 1 or multi:
        best = max(members, key=lambda m: m[2]["frames"])
        image = _image_from_dataset(best[1], best[0], max_voxels)
        skipped.extend(str(m[0].relative_to(root)) for m in members if m is not best)
    else:
        image = _series_image(members, root, max_voxels)
    image.source = str(root)
    image.metadata["series_chosen"] = chosen
    image.metadata["series_skipped"] = series_skipped
    image.metadata["files_skipped"] = skipped
    image.metadata["n_instances"] = len(members)
    if unreadable:
        _integrity_notes(np.zeros(0), unreadable, image.metadata)
    if image.metadata.get("series_integrity"):
        import logging

        logging.getLogger(__name__).warning("DICOM series integrity: %s", "; ".join(image.metadata["series_integrity"]))
    return image


def _series_image(members: list[tuple[Path, Any, dict[str, Any]]], root: Path, max_voxels: int) -> Image:
    """Single-frame instances of one series -> volume (z, y, x) or sequence (t, z, y, x)."""
    infos = [m[2] for m in members]
    sizes = {(i["rows"], i["cols"], i["spp"]) for i in infos}
    if len(sizes) > 1:
        desc = ", ".join(f"{r}x{c}" + (f"x{s}" if s > 1 else "") for r, c, s in sorted(sizes))
        raise InputError(f"inconsistent series: slices have different sizes ({desc})", root)
    rows, cols, spp = sizes.pop()
    check_size((len(members), rows, cols, spp), max_voxels, root)

    first = members[0][1]
    modality = str(first.get("Modality", "") or "OT")
    meta = safe_metadata(first)
    cache: dict[tuple[float, ...] | None, Any] = {}
    planes = []
    for i in infos:
        key = tuple(i["iop"]) if i["iop"] is not None else None
        if key not in cache:
            cache[key] = _orientation(i["iop"])
        planes.append(cache[key])
    geometric = all(pl is not None for pl in planes) and all(i["ipp"] is not None for i in infos)
    if geometric:
        r, c, n = planes[0]
        for pl in {id(pl): pl for pl in planes}.values():
            if abs(float(np.dot(pl[2], n))) < 0.999 or float(np.dot(pl[0], r)) < 0.999:
                raise InputError("inconsistent series: slices have different orientations "
                                 "(e.g. a localizer); pass series_uid", root)
        proj = np.stack([i["ipp"] for i in infos]) @ n
        idx, zpos = _arrange(proj, [i["time"] for i in infos], root)
    else:
        order = sorted(range(len(members)), key=lambda k: (infos[k]["time"][3], k))
        idx = np.asarray(order, dtype=np.int64)[:, None]  # (t, z=1): a stack of 2D images
        zpos = np.zeros(1)
        meta["ordered_by"] = "InstanceNumber (no ImagePositionPatient)"
    n_t, n_z = idx.shape

    color = spp > 1
    photometric = infos[0]["photometric"]
    invert = None if color or photometric != "MONOCHROME1" else _invert_base(first)
    rescales = [(1.0, 0.0) if color else (_num(i["slope"], 1.0) or 1.0, _num(i["intercept"], 0.0)) for i in infos]
    rescaled = not color and any(i["slope"] is not None or i["intercept"] is not None for i in infos)

    flat = idx.ravel().tolist()
    out: np.ndarray | None = None
    expected_shape = (rows, cols, spp) if color else (rows, cols)
    for k, i in enumerate(flat):
        path_i, ds_i, info_i = members[i]
        stored = _fast_pixels(ds_i, info_i, path_i)
        stored = (_stored_pixels(ds_i, path_i) if stored is None else stored)[0]
        if stored.shape != expected_shape:
            raise InputError(f"inconsistent series: decoded slice has shape {stored.shape}", path_i)
        if out is None:
            out = np.empty((len(flat),) + stored.shape, dtype=_output_dtype(stored, rescaled, modality))
            if np.issubdtype(stored.dtype, np.floating):
                meta["float_pixel_data"] = True
        s, b = rescales[i]
        _write_frame(out[k], stored, s, b, invert)
    assert out is not None
    if invert is not None:
        meta["monochrome1_inverted"] = True
    sops = [infos[i]["sop"] for i in flat]

    (psy, psx), _ = _pixel_spacing(first)
    if not geometric:
        meta["dicom_refs"] = dicom_refs(first, sops)
        return Image(out, spacing=clean((psy, psx)), modality=modality, spatial_ndim=2,
                     has_channels=color, is_sequence=True, source=str(root), metadata=meta)
    dz = _slice_spacing(zpos, meta, first)
    meta["slice_spacing_mm"] = round(dz, 6)
    _integrity_notes(zpos, [], meta)
    arr = out.reshape((n_t, n_z) + out.shape[1:])
    if n_t == 1:
        arr = arr[0]
        meta["dicom_refs"] = dicom_refs(first, sops)
    else:
        meta["dicom_refs"] = dicom_refs(first, [sops[t * n_z:(t + 1) * n_z] for t in range(n_t)])
        meta["n_timepoints"] = n_t
    origin = infos[int(idx[0, 0])]["ipp"]
    return Image(arr, spacing=clean((dz, psy, psx)), origin=tuple(origin),
                 direction=np.stack([n, c, r], axis=1), modality=modality, spatial_ndim=3,
                 has_channels=color, is_sequence=n_t > 1, has_geometry=True, source=str(root),
                 metadata=meta)
