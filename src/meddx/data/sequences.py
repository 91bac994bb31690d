"""Studies as ordered frame sequences: DICOM series / multi-frame, 4D NIfTI, slice folders, video.

A sequence is an array with a leading frame axis: 2D frames (T, H, W[, C]) for cine, video and
slice stacks, 3D frames (T, D, H, W) for 4D volumes. Frames are sampled (`uniform` to a fixed
length, or `all`) and batched with zero padding plus a boolean frame mask (`pad_sequences`), which
the sequence models in `meddx.models.sequence` honour. No TensorFlow here.

    seq = load_sequence("study_folder/")          # FrameSequence: frames, numbers, source
    X, mask = pad_sequences([a.frames, b.frames], length=32)
    lgg = load_lgg_sequences("lgg/", size=64)     # per patient: frames, labels, masks, ids
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import DataError, InputError

__all__ = [
    "FrameSequence", "SAMPLING_MODES", "slice_number", "list_slice_files", "sample_frames", "load_sequence",
    "pad_sequences", "load_lgg_sequences", "make_windows", "stack_adjacent", "LGG_ROOT_ENV",
    "lgg_root", "normalise_stack", "volume_series_as_frames",
]

SAMPLING_MODES = ("all", "uniform")
LGG_ROOT_ENV = "MEDDX_LGG_ROOT"  # where load_lgg_sequences looks when no root is given
_RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_MASK_RE = re.compile(r"[_-]mask$", re.IGNORECASE)
_NUM_RE = re.compile(r"(\d+)")


@dataclass
class FrameSequence:
    """An ordered stack of frames (T, ...) with the frame numbers they came from and their source."""

    frames: np.ndarray
    numbers: np.ndarray
    source: str = ""
    masks: np.ndarray | None = None
    frame_time_ms: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def slice_number(name: str | Path) -> int:
    """The slice number of a file: the LAST integer in its stem ('TCGA_CS_4941_19960909_10.tif' -> 10)."""
    stem = Path(name).name
    for suf in _RASTER_SUFFIXES:
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    stem = _MASK_RE.sub("", stem)
    nums = _NUM_RE.findall(stem)
    if not nums:
        raise InputError("file name holds no slice number", name)
    return int(nums[-1])


def list_slice_files(folder: str | Path) -> list[tuple[int, Path, Path | None]]:
    """(number, image path, mask path or None) of a folder of slice images, ordered by slice number.

    `*_mask.<ext>` files are masks of the image with the same stem; other files are ignored.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("not a folder of slice images", root)
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for p in root.iterdir():
        if not p.is_file() or p.suffix.lower() not in _RASTER_SUFFIXES:
            continue
        is_mask = bool(_MASK_RE.search(p.stem))
        n = slice_number(p)
        target = masks if is_mask else images
        if n in target:
            raise InputError(f"two files carry slice number {n} ({target[n].name}, {p.name})", root)
        target[n] = p
    if not images:
        raise InputError("folder contains no slice images (.tif/.png/.jpg/.bmp)", root)
    return [(n, images[n], masks.get(n)) for n in sorted(images)]


def sample_frames(n_frames: int, length: int | None = None, mode: str = "uniform") -> np.ndarray:
    """Frame indices: `all` -> every frame; `uniform` -> `length` evenly spaced indices (repeats when short)."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if n_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    if mode == "all" or length is None:
        return np.arange(n_frames)
    if length < 1:
        raise ValueError("length must be >= 1")
    # centres of `length` equal bins over [0, n_frames): stable order, first/last frames covered
    return np.minimum(((np.arange(length) + 0.5) * n_frames / length).astype(np.int64), n_frames - 1)


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image: {exc}", path) from None


def _to_unit(a: np.ndarray) -> np.ndarray:
    """Integer images -> [0, 1] by their dtype range; float images min-max scaled per sequence."""
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        top = 1.0 if a.dtype == bool else float(np.iinfo(a.dtype).max)
        return a.astype(np.float32) / top
    a = a.astype(np.float32)
    lo, hi = float(np.min(a)), float(np.max(a))
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _resize_frames(frames: np.ndarray, size: int | None, order: int = 1) -> np.ndarray:
    if size is None:
        return frames
    from skimage.transform import resize

    t = frames.shape[0]
    out_shape = (size, size) + tuple(frames.shape[3:])
    aa = order > 0
    return np.stack([resize(frames[i], out_shape, order=order, anti_aliasing=aa, preserve_range=True)
                     for i in range(t)]).astype(frames.dtype if order == 0 else np.float32)


def load_sequence(path: str | Path, mode: str = "all", length: int | None = None, size: int | None = None,
                  normalise: bool = True, series_uid: str | None = None) -> FrameSequence:
    """Read a study as an ordered frame sequence.

    `path`: a folder of numbered slice images (masks `*_mask.*` returned in `.masks`), a DICOM
    series folder or multi-frame file, a 3D/4D NIfTI or other volume (3D volume -> one frame per
    slice along the first array axis; 4D -> one 3D frame per time point), or a video. `mode`/`length`
    pick frames (see `sample_frames`); `size` resizes 2D frames to size x size; `normalise` maps
    intensities to [0, 1] (per sequence for float data).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("no such file or folder", p)
    masks = None
    frame_time = None
    meta: dict[str, Any] = {}
    if p.is_dir() and any(c.is_file() and c.suffix.lower() in _RASTER_SUFFIXES for c in p.iterdir()):
        entries = list_slice_files(p)
        arrays = [_read_raster(e[1]) for e in entries]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise InputError(f"slice images differ in shape: {sorted(shapes)}", p)
        frames = np.stack(arrays)
        numbers = np.asarray([e[0] for e in entries])
        if any(e[2] is not None for e in entries):
            masks = np.stack([(_read_raster(e[2]) > 0).reshape(arrays[0].shape[:2] + (-1,)).any(-1)
                              if e[2] is not None else np.zeros(arrays[0].shape[:2], bool) for e in entries])
        meta["kind"] = "slice_folder"
    else:
        from meddx.io import read_image

        image = read_image(p, series_uid=series_uid)
        frames = np.asarray(image.array)
        if not image.is_sequence:
            if image.spatial_ndim != 3:
                raise InputError(f"a single 2D image (shape {frames.shape}) is not a sequence", p)
            meta["kind"] = "volume_slices"  # a 3D volume read as its slices along the first axis
        else:
            meta["kind"] = "sequence"
        numbers = np.arange(frames.shape[0])
        frame_time = image.metadata.get("frame_time_ms")
        meta["modality"] = image.modality
        meta["spatial_ndim"] = image.spatial_ndim
    idx = sample_frames(frames.shape[0], length, mode)
    frames, numbers = frames[idx], numbers[idx]
    if masks is not None:
        masks = masks[idx]
    if normalise:
        frames = _to_unit(frames)
    if size is not None:
        if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] not in (1, 3, 4)):
            raise InputError(f"`size` resizes 2D frames only; frames have shape {frames.shape[1:]}", p)
        frames = _resize_frames(frames, size)
        if masks is not None:
            masks = _resize_frames(masks.astype(np.uint8), size, order=0).astype(bool)
    return FrameSequence(frames=frames, numbers=numbers, source=str(p), masks=masks,
                         frame_time_ms=None if frame_time is None else float(frame_time), metadata=meta)


def volume_series_as_frames(image: Any, slice_index: int | None = None) -> Any:
    """A series of 3D volumes (a 4D NIfTI read as (t, z, y, x), time the NIfTI's last axis) as the sequence of 2D
    frames (t, y, x) the sequence models read: one frame per time point, its slice `slice_index` along z (default
    the middle slice; a single-slice series, (x, y, 1, t), is its only slice). Geometry keeps the in-plane spacing;
    `metadata["frames_from"]` says which slice. Any other image is returned unchanged."""
    if not (image.is_sequence and image.spatial_ndim == 3):
        return image
    arr = np.asarray(image.array)
    depth = int(arr.shape[1])
    z = depth // 2 if slice_index is None else int(slice_index)
    if not 0 <= z < depth:
        raise InputError(f"slice {z} is outside the {depth} slice(s) of each volume", image.source or None)
    d = np.asarray(image.direction, float)  # columns: numpy axes (z, y, x) in LPS
    origin = np.asarray(image.origin, float) + z * float(image.spacing[0]) * d[:, 0]  # the slice's own corner
    frames = image.with_array(np.ascontiguousarray(arr[:, z]), spatial_ndim=2, spacing=tuple(image.spacing)[1:],
                              origin=tuple(origin), direction=d[:, 1:])
    frames.metadata["frames_from"] = f"slice {z} of {depth} of each of the {arr.shape[0]} volumes"
    return frames


def pad_sequences(sequences: Sequence[np.ndarray], length: int | None = None,
                  value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length sequences (T_i, ...) into (N, length, ...) plus a boolean frame mask (N, length).

    Shorter sequences are padded at the END with `value` (0 keeps the models' padding detection
    exact); longer ones are uniformly sub-sampled to `length`. `length=None` uses the longest.
    """
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    tail = {s.shape[1:] for s in seqs}
    if len(tail) != 1:
        raise ValueError(f"sequences differ in frame shape: {sorted(tail)}")
    length = int(length) if length is not None else max(s.shape[0] for s in seqs)
    dtype = np.result_type(*[s.dtype for s in seqs], np.asarray(value).dtype)
    X = np.full((len(seqs), length) + seqs[0].shape[1:], value, dtype=dtype)
    mask = np.zeros((len(seqs), length), bool)
    for i, s in enumerate(seqs):
        if s.shape[0] > length:
            s = s[sample_frames(s.shape[0], length, "uniform")]
        X[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return X, mask


def lgg_root(root: str | Path | None = None) -> Path:
    """The LGG data folder: `root` when given, else the environment variable MEDDX_LGG_ROOT; DataError if neither."""
    if root is None or str(root) == "":
        root = os.environ.get(LGG_ROOT_ENV) or None
    if root is None:
        raise DataError(f"no LGG data folder given: pass root=... or set the environment variable {LGG_ROOT_ENV}")
    return Path(root)


def load_lgg_sequences(root: str | Path | None = None, size: int = 64) -> dict[str, Any]:
    """The LGG slice stacks, one sequence per patient folder, ordered by slice number.

    `root`: the folder of patient sub-folders; None reads it from the environment variable
    MEDDX_LGG_ROOT (DataError when neither is set).

    Returns lists (one entry per patient): `frames` (T, size, size, 3) float32 in [0, 1]
    (pre-contrast, FLAIR, post-contrast), `labels` (T,) int64 lesion presence (mask has any
    foreground at full resolution), `masks` (T, size, size) uint8, `numbers` (T,) slice numbers,
    and `patient_ids` (folder names, 'TCGA_CS_4941_19960909').
    """
    base = lgg_root(root)
    if not base.is_dir():
        raise DataError("LGG data folder not found", base)
    folders = sorted(d for d in base.iterdir() if d.is_dir())
    if not folders:
        raise DataError("LGG data folder has no patient sub-folders", base)
    out: dict[str, Any] = {"frames": [], "labels": [], "masks": [], "numbers": [], "patient_ids": []}
    for d in folders:
        entries = list_slice_files(d)
        if any(e[2] is None for e in entries):
            missing = [e[1].name for e in entries if e[2] is None][:3]
            raise DataError(f"slices without a *_mask file: {missing}", d)
        seq = load_sequence(d, size=size)
        full_masks = [np.asarray(_read_raster(e[2])) > 0 for e in entries]
        labels = np.asarray([int(m.any()) for m in full_masks], np.int64)
        frames = seq.frames if seq.frames.ndim == 4 else np.repeat(seq.frames[..., None], 3, axis=-1)
        out["frames"].append(frames.astype(np.float32))
        out["labels"].append(labels)
        out["masks"].append(seq.masks.astype(np.uint8))
        out["numbers"].append(seq.numbers)
        out["patient_ids"].append(d.name)
    return out


def make_windows(sequences: Sequence[np.ndarray], frame_labels: Sequence[np.ndarray], window: int,
                 stride: int = 1, groups: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """Sliding windows over each sequence: `X` (N, window, ...), `y` (N,) = any positive frame in the window,
    `frame_labels` (N, window), `groups` (N,) the source sequence's group (e.g. patient) and `starts` (N,)."""
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be >= 1")
    groups = list(range(len(sequences))) if groups is None else list(groups)
    xs, ys, fl, gs, st = [], [], [], [], []
    for seq, lab, g in zip(sequences, frame_labels, groups):
        seq, lab = np.asarray(seq), np.asarray(lab)
        if seq.shape[0] < window:
            continue
        for s in range(0, seq.shape[0] - window + 1, stride):
            xs.append(seq[s:s + window])
            fl.append(lab[s:s + window])
            ys.append(int(lab[s:s + window].max() > 0))
            gs.append(g)
            st.append(s)
    if not xs:
        raise ValueError(f"no sequence is at least {window} frames long")
    return {"X": np.stack(xs), "y": np.asarray(ys, np.int64), "frame_labels": np.stack(fl),
            "groups": np.asarray(gs), "starts": np.asarray(st, np.int64)}


def stack_adjacent(frames: np.ndarray, context: int = 1) -> np.ndarray:
    """2.5D input: each frame (T, H, W[, C]) with its `context` neighbours on each side as extra channels.

    Returns (T, H, W, (2*context+1)*C), ordered [t-context .. t+context]; edges repeat the end frame.
    """
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"expected frames (T, H, W[, C]), got shape {np.asarray(frames).shape}")
    t = a.shape[0]
    parts = [a[np.clip(np.arange(t) + k, 0, t - 1)] for k in range(-context, context + 1)]
    return np.concatenate(parts, axis=-1)


def normalise_stack(frames: np.ndarray, ref_channel: int = 1, threshold: float = 0.05) -> np.ndarray:
    """Z-score every channel of a (T, H, W[, C]) stack against the whole stack's foreground voxels.

    Foreground = `ref_channel` (FLAIR for LGG; the only channel for grey frames) above `threshold`.
    Why: MRI intensities are arbitrary per scan, so "brighter than this patient's brain" is the lesion
    cue a per-frame encoder can share across patients. Uses no labels (safe on held-out studies).
    """
    a = np.asarray(frames, dtype=np.float32)
    x = a[..., None] if a.ndim == 3 else a
    fg = x[..., min(ref_channel, x.shape[-1] - 1)] > threshold
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        out[..., c] = zscore_against(x[..., c], fg)
    return out.reshape(a.shape)


def zscore_against(x: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """`x` minus the median, over the sd, of its `foreground` voxels (all voxels when there are none)."""
    vals = x[foreground] if foreground.any() else x.ravel()
    return (x - float(np.median(vals))) / (float(vals.std()) or 1.0)
