"""A study's frames as a sequence model's input: sample, preprocess each frame as a 2D image, pad, mask.

One function for training (`meddx.train.sequence`) and inference (`meddx.infer.SequenceClassifier`), so both
feed the model exactly the same frames. A study is a sequence `Image` with 2D frames (video, cine, DICOM
multi-frame) or a 3D volume read as its slices along the first array axis. No TensorFlow here.

Videos are cheap to sample: `read_study` returns a lazy `meddx.io.video.VideoStudy`, and `sequence_input`
decodes only the frames it samples (the same frames, pixel for pixel, as a full decode) and keeps the
preprocessed result in the on-disk cache of `meddx.transforms.prepare` (keyed by the file's path, size and
mtime, the preprocessing, the frame count and the sampling), so a second training or evaluation on the same
videos decodes none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.data.sequences import sample_frames
from meddx.errors import InputError

__all__ = ["FRAMES_CACHE", "check_frames", "frame_count", "is_lazy_video", "read_study", "sampled_display",
           "sequence_input"]

_SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
FRAMES_CACHE = "frames"  # sub-folder of the meddx cache holding preprocessed sampled frames, one file per study
_CACHE_VERSION = 1  # bump when decoding or sampling changes what a cached entry holds
_CACHE_MAX_BYTES = 64 * 2**20  # larger inputs (sampling "all" of long clips) are not cached


def check_frames(image: Any) -> None:
    """InputError unless `image` is a sequence of 2D frames or a 3D volume (a slice stack)."""
    if image.is_sequence and image.spatial_ndim == 3:
        raise InputError("is a series of 3D volumes (4D); sequence models take 2D frames (video, cine, slice "
                         "stack)", image.source or None)
    if not (image.is_sequence or image.spatial_ndim == 3):
        raise InputError("is not a frame sequence (video, cine, slice stack); a sequence model needs one",
                         image.source or None)


def sequence_input(image: Any, prep: Any, frames: int | None, sampling: str = "uniform",
                   progress: bool = False, cache: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model input (T, H, W, C), frame mask (T,), input frame index of each model frame) for one study.

    `sampling` "uniform": `frames` evenly spaced frames (repeated when the study is shorter); "all": every
    frame. Each sampled frame goes through `prep` (a 2D `Preprocessing`); any padding is all-zero frames,
    which the sequence models mask out.

    A video not yet decoded (a `VideoStudy` from `read_study`) is sampled without decoding the whole clip, and
    with `cache` the result is kept on disk and reused while the file and the settings are unchanged.
    """
    from meddx.io.video import VideoStudy

    if isinstance(image, VideoStudy) and not image.decoded:
        return _video_input(image, prep, frames, sampling, progress, cache)
    check_frames(image)
    n = int(image.array.shape[0])
    idx = sample_frames(n, None if sampling == "all" else frames, sampling)
    return _assemble(prep.batch([image.array[k] for k in idx], progress=progress), idx, frames, sampling)


def _assemble(x: np.ndarray, idx: np.ndarray, frames: int | None,
              sampling: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preprocessed frames -> (padded input, mask, indices)."""
    t = len(idx) if sampling == "all" else max(len(idx), frames or 0)
    out = np.zeros((t, *x.shape[1:]), np.float32)
    out[: len(idx)] = x
    return out, _mask(len(idx), t), np.asarray(idx)


def _mask(k: int, t: int) -> np.ndarray:
    mask = np.zeros(t, bool)
    mask[:k] = True
    return mask


def _video_input(study: Any, prep: Any, frames: int | None, sampling: str, progress: bool,
                 cache: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sequence_input` for a video read lazily: the cache, else decode only the sampled frames."""
    from meddx.transforms.prepare import file_cache_key, load_cached_arrays, save_cached_arrays

    want = None if sampling == "all" else frames
    settings = {"v": _CACHE_VERSION, "preprocessing": prep.get_config(), "frames": want, "sampling": sampling}
    key = file_cache_key(study.path, settings) if cache else None
    hit = load_cached_arrays(key, FRAMES_CACHE) if key else None
    if hit is not None and {"x", "idx"} <= hit.keys() and tuple(hit["x"].shape[1:]) == tuple(prep.output_shape):
        x, idx = hit["x"].astype(np.float32, copy=False), hit["idx"].astype(np.int64, copy=False)
        return x, _mask(len(idx), len(x)), idx
    check_frames(study)
    sampled = study.sample(lambda n: sample_frames(n, want, sampling))
    out, mask, idx = _assemble(prep.batch(sampled.frames, progress=progress), sampled.indices, frames, sampling)
    if key and out.nbytes <= _CACHE_MAX_BYTES:
        save_cached_arrays(key, FRAMES_CACHE, {"x": out, "idx": idx, "n_frames": np.int64(sampled.n_frames)})
    return out, mask, idx


def is_lazy_video(image: Any) -> bool:
    """True for a video read by `read_study` and not decoded whole (sample it; never touch `.array`)."""
    from meddx.io.video import VideoStudy

    return isinstance(image, VideoStudy) and not image.decoded


def frame_count(image: Any) -> int:
    """Frames (or slices) of a study, without decoding a lazy video."""
    return int(image.n_frames) if is_lazy_video(image) else int(np.shape(image.array)[0])


def sampled_display(image: Any, idx: Any) -> np.ndarray | None:
    """For a lazy video: a grey 0-1 view (frames, y, x) holding only the frames in `idx` (the frames the model
    read, where the key frames are), every other frame left 0 and never decoded; channels averaged, 0.5-99.5
    percentile window over those frames (as `meddx.infer.display.grey_display`). None for any other study
    (use the whole-array display). The frames come from the sample just taken, so nothing is decoded twice."""
    if not is_lazy_video(image):
        return None
    want = np.unique(np.asarray(idx, np.int64).reshape(-1))
    sampled = image.sample(want)
    arr = np.asarray(sampled.frames, np.float32)
    if arr.ndim == 4:
        arr = arr[..., :3].mean(axis=-1)
    lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
    out = np.zeros((image.n_frames, *arr.shape[1:]), np.float32)  # untouched pages stay unallocated
    out[sampled.indices] = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def read_study(path: str | Path) -> Any:
    """A study as an `Image`: anything `meddx.io.read_image` reads, or a folder of numbered slice images
    (PNG/TIFF/JPEG, ordered by slice number) as a sequence of 2D frames. A video or GIF comes back unread, as a
    `meddx.io.video.VideoStudy` (decoded when its frames are used; a damaged file is an InputError then). A series
    of 3D volumes (4D NIfTI, time last) comes back as one 2D frame per time point, the middle slice of each volume
    (`meddx.data.sequences.volume_series_as_frames`)."""
    from meddx.io import read_image
    from meddx.io.image import Image

    p = Path(path)
    if p.is_dir() and any(c.is_file() and c.suffix.lower() in _SLICE_SUFFIXES for c in p.iterdir()):
        from meddx.data.sequences import load_sequence

        seq = load_sequence(p, normalise=False)
        frames = np.asarray(seq.frames)
        return Image(frames, spatial_ndim=2, has_channels=frames.ndim == 4, is_sequence=True, source=str(p))
    if p.is_file() and p.stat().st_size > 0:
        from meddx.io.readers import detect_format

        if detect_format(p) in ("video", "gif"):
            from meddx.io.video import VideoStudy

            return VideoStudy(p)
    from meddx.data.sequences import volume_series_as_frames

    return volume_series_as_frames(read_image(p))  # a 4D volume series: one 2D frame per time point
