"""Video / cine (mp4, avi, mov, mpeg, mkv, webm) with PyAV, and animated GIF with Pillow.

Frames become a sequence `Image` (t, y, x) for grayscale streams or (t, y, x, 3) for colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import InputError
from meddx.io._common import DEFAULT_MAX_VOXELS
from meddx.io.image import Image

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".mkv", ".webm", ".wmv", ".ogv"})


def _gif_frames(p: Path, max_frames: int | None, max_voxels: int) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image as PILImage
    from PIL import ImageSequence, UnidentifiedImageError

    frames: list[np.ndarray] = []
    durations: list[float] = []
    try:
        with PILImage.open(p) as im:
            for frame in ImageSequence.Iterator(im):
                frames.append(np.array(frame.convert("RGB")))
                durations.append(float(frame.info.get("duration", 0) or 0))
                if (len(frames) * frames[0].size) > max_voxels:
                    raise InputError(f"video too large: over the limit of {max_voxels} voxels (max_voxels)", p)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except UnidentifiedImageError:
        raise InputError("not a readable GIF", p) from None
    except InputError:  # "video too large" (an InputError is a ValueError too)
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read GIF: {exc}", p) from None
    if not frames:
        raise InputError("GIF holds no frames", p)
    arr = np.stack(frames)
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        arr = np.ascontiguousarray(arr[..., 0])
    meta: dict[str, Any] = {"format": "GIF"}
    if durations and durations[0] > 0:
        meta["frame_time_ms"] = durations[0]
    return arr, meta


def _av_frames(p: Path, max_frames: int | None, max_voxels: int) -> tuple[np.ndarray, dict[str, Any]]:
    import av

    frames: list[np.ndarray] = []
    meta: dict[str, Any] = {}
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise InputError("file holds no video stream", p)
            stream = container.streams.video[0]
            pix_fmt = str(stream.codec_context.pix_fmt or "")
            gray = pix_fmt.startswith("gray")
            meta = {"format": container.format.name, "codec": stream.codec_context.name, "pix_fmt": pix_fmt}
            if stream.average_rate:
                meta["fps"] = float(stream.average_rate)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="gray" if gray else "rgb24"))
                if len(frames) * frames[0].size > max_voxels:
                    raise InputError(f"video too large: over the limit of {max_voxels} voxels (max_voxels)", p)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read video: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", p) from None
    if not frames:
        raise InputError("video holds no decodable frames", p)
    return np.stack(frames), meta


def read_frames(path: str | Path, max_frames: int | None = None,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """Decoded frames of a video or animated GIF as (t, y, x) or (t, y, x, 3) uint8."""
    return _read(Path(path), max_frames, max_voxels)[0]


def _read(p: Path, max_frames: int | None, max_voxels: int) -> tuple[np.ndarray, dict[str, Any]]:
    if not p.is_file():
        raise InputError("no such file", p)
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}", p)
    with open(p, "rb") as fh:
        head = fh.read(6)
    if head[:4] == b"GIF8":
        return _gif_frames(p, max_frames, max_voxels)
    return _av_frames(p, max_frames, max_voxels)


def read_video(path: str | Path, max_frames: int | None = None,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """Video / animated GIF -> sequence Image (no physical geometry; spacing 1)."""
    p = Path(path)
    arr, meta = _read(p, max_frames, max_voxels)
    if "fps" in meta and meta["fps"] > 0:
        meta["frame_time_ms"] = round(1000.0 / meta["fps"], 4)
    return Image(arr, modality=str(meta.get("modality", "OT")), spatial_ndim=2, has_channels=arr.ndim == 4,
                 is_sequence=True, source=str(p), metadata=meta)
