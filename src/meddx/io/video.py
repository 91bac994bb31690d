"""Video / cine (mp4, avi, mov, mpeg, mkv, webm) with PyAV, and animated GIF with Pillow.

Frames become a sequence `Image` (t, y, x) for grayscale streams or (t, y, x, 3) for colour.

Two ways in:

- `read_video` / `read_frames` decode every frame into one array (what `meddx info` and `read_image` show);
- `read_frames_at` / `VideoStudy.sample` decode the file in order but convert and keep only the frames asked
  for (a model that looks at 16 frames of a 400-frame clip needs 16 arrays, not 400). The frames kept are
  exactly those of the full decode (same indices, same pixels, same grey/colour decision).

`VideoStudy` is a sequence `Image` read lazily: nothing is decoded until `.array` (all frames) or `.sample()`
(some frames) is used, so a caller that finds the study's preprocessed frames in a cache opens no video at all.

Bad files are one-line `InputError`s naming the file: not a video / damaged header, no video stream, no
decodable frames, frames of different sizes, a stream that breaks off mid-way (truncated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.io._common import DEFAULT_MAX_VOXELS
from meddx.io.image import Image

__all__ = ["VIDEO_SUFFIXES", "SampledFrames", "VideoStudy", "count_frames", "read_frames", "read_frames_at",
           "read_video"]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".mkv", ".webm", ".wmv", ".ogv"})
LOGGER = logging.getLogger("meddx")

Select = Callable[[int], Sequence[int]]  # number of frames -> frame indices to keep (any order, repeats allowed)


@dataclass
class SampledFrames:
    """Some frames of a video: `frames[i]` is frame `indices[i]` of the `n_frames` the full decode yields."""

    frames: np.ndarray  # (k, y, x) grey or (k, y, x, 3) colour, uint8
    indices: np.ndarray  # (k,) int64
    n_frames: int
    metadata: dict[str, Any] = field(default_factory=dict)


# -- errors ---------------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """The library's message without errno numbers or the file name it repeats."""
    text = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
    return str(text or type(exc).__name__)


def _open_error(exc: BaseException, p: Path) -> InputError:
    if isinstance(exc, EOFError):
        return InputError("cannot read video: the file ends before its header does (truncated?)", p)
    if type(exc).__name__ == "InvalidDataError":
        return InputError("cannot read video: invalid data (the file is damaged, truncated or not a video)", p)
    return InputError(f"cannot read video: {_reason(exc)}", p)


def _decode_error(exc: BaseException, p: Path, done: int) -> InputError:
    return InputError(f"video is damaged or truncated: decoding stopped after {done} frame(s) ({_reason(exc)})", p)


def _size_error(p: Path, first: tuple[int, int], k: int, size: tuple[int, int]) -> InputError:
    return InputError(f"frames of different sizes: frame 0 is {first[0]}x{first[1]}, frame {k} is "
                      f"{size[0]}x{size[1]} (width x height); a video's frames must share one size", p)


def _too_large(p: Path, max_voxels: int) -> InputError:
    return InputError(f"video too large: over the limit of {max_voxels} voxels (max_voxels)", p)


# -- GIF (Pillow) ---------------------------------------------------------------------------------------

def _gif_pass(p: Path, want: set[int] | None, max_frames: int | None,
              max_voxels: int) -> tuple[dict[int, np.ndarray], int, bool, dict[str, Any]]:
    """Walk a GIF's frames in order: (RGB arrays of the frames in `want` (all when None), frames seen, whether
    every frame seen is grey (R == G == B), metadata)."""
    from PIL import Image as PILImage
    from PIL import ImageSequence, UnidentifiedImageError

    kept: dict[int, np.ndarray] = {}
    gray = True
    first_duration = 0.0
    k = 0
    try:
        with PILImage.open(p) as im:
            first: tuple[int, int] | None = None
            for frame in ImageSequence.Iterator(im):
                size = tuple(frame.size)
                if first is None:
                    first = size  # type: ignore[assignment]
                    first_duration = float(frame.info.get("duration", 0) or 0)
                elif size != first:
                    raise _size_error(p, first, k, size)  # type: ignore[arg-type]
                rgb = np.array(frame.convert("RGB"))
                if gray:
                    gray = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
                if want is None or k in want:
                    kept[k] = rgb
                    if len(kept) * rgb.size > max_voxels:
                        raise _too_large(p, max_voxels)
                k += 1
                if max_frames is not None and k >= max_frames:
                    break
    except UnidentifiedImageError:
        raise InputError("not a readable GIF", p) from None
    except InputError:  # our own messages (an InputError is a ValueError too)
        raise
    except (OSError, ValueError, EOFError) as exc:
        if k:
            raise InputError(f"GIF is damaged or truncated: reading stopped after {k} frame(s) ({_reason(exc)})",
                             p) from None
        raise InputError(f"cannot read GIF: {_reason(exc)}", p) from None
    if k == 0:
        raise InputError("GIF holds no frames", p)
    meta: dict[str, Any] = {"format": "GIF"}
    if first_duration > 0:
        meta["frame_time_ms"] = first_duration
    return kept, k, gray, meta


def _gif_count(p: Path) -> tuple[int, tuple[int, int]]:
    """(frames, (height, width)) of a GIF from its block structure, without decoding pixels."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(p) as im:
            return int(getattr(im, "n_frames", 1)), (int(im.size[1]), int(im.size[0]))
    except UnidentifiedImageError:
        raise InputError("not a readable GIF", p) from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read GIF: {_reason(exc)}", p) from None


# -- PyAV -----------------------------------------------------------------------------------------------

def _av_open(p: Path) -> Any:
    import av

    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise _open_error(exc, p) from None
    if not container.streams.video:
        container.close()
        raise InputError("file holds no video stream", p)
    return container


def _av_meta(container: Any, stream: Any) -> dict[str, Any]:
    pix_fmt = str(stream.codec_context.pix_fmt or "")
    meta: dict[str, Any] = {"format": container.format.name, "codec": stream.codec_context.name, "pix_fmt": pix_fmt}
    if stream.average_rate:
        meta["fps"] = float(stream.average_rate)
    return meta


def _av_pass(p: Path, want: set[int] | None, max_frames: int | None,
             max_voxels: int) -> tuple[dict[int, np.ndarray], int, dict[str, Any]]:
    """Decode the first video stream in order: (arrays of the frames in `want` (all when None), frames decoded,
    metadata). Frames not wanted are decoded (later frames depend on them) but never converted or kept."""
    import av

    kept: dict[int, np.ndarray] = {}
    k = 0
    with _av_open(p) as container:
        stream = container.streams.video[0]
        meta = _av_meta(container, stream)
        fmt = "gray" if meta["pix_fmt"].startswith("gray") else "rgb24"
        first: tuple[int, int] | None = None
        try:
            for frame in container.decode(stream):
                size = (int(frame.width), int(frame.height))
                if first is None:
                    first = size
                elif size != first:
                    raise _size_error(p, first, k, size)
                if want is None or k in want:
                    kept[k] = frame.to_ndarray(format=fmt)
                    if len(kept) * kept[k].size > max_voxels:
                        raise _too_large(p, max_voxels)
                k += 1
                if max_frames is not None and k >= max_frames:
                    break
        except InputError:
            raise
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            raise _decode_error(exc, p, k) from None
    if k == 0:
        raise InputError("video holds no decodable frames (0 frames)", p)
    return kept, k, meta


def _av_count(p: Path) -> int:
    """Frames the decoder will yield, from the container alone (no decoding): the stream's packets that carry
    data and are not marked discard (an edit list's skipped frames), which is exact where the frame count in
    the header is not (.mov edit lists, MPEG program streams with no count). Verified against the decode."""
    import av

    n = 0
    with _av_open(p) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size and not packet.is_discard:
                    n += 1
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            raise _decode_error(exc, p, 0) from None
    return n


# -- public API -----------------------------------------------------------------------------------------

def _is_gif(p: Path) -> bool:
    if not p.is_file():
        raise InputError("no such file", p)
    with open(p, "rb") as fh:
        return fh.read(4) == b"GIF8"


def _grey_or_rgb(arr: np.ndarray, gray: bool) -> np.ndarray:
    return np.ascontiguousarray(arr[..., 0]) if gray else arr


def _read(p: Path, max_frames: int | None, max_voxels: int) -> tuple[np.ndarray, dict[str, Any]]:
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}", p)
    if _is_gif(p):
        kept, n, gray, meta = _gif_pass(p, None, max_frames, max_voxels)
        return _grey_or_rgb(np.stack([kept[i] for i in range(n)]), gray), meta
    kept, n, meta = _av_pass(p, None, max_frames, max_voxels)
    return np.stack([kept[i] for i in range(n)]), meta


def read_frames(path: str | Path, max_frames: int | None = None,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """Decoded frames of a video or animated GIF as (t, y, x) or (t, y, x, 3) uint8."""
    return _read(Path(path), max_frames, max_voxels)[0]


def _with_frame_time(meta: dict[str, Any]) -> dict[str, Any]:
    if "fps" in meta and meta["fps"] > 0:
        meta["frame_time_ms"] = round(1000.0 / meta["fps"], 4)
    return meta


def read_video(path: str | Path, max_frames: int | None = None,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """Video / animated GIF -> sequence Image (no physical geometry; spacing 1)."""
    p = Path(path)
    arr, meta = _read(p, max_frames, max_voxels)
    _with_frame_time(meta)
    return Image(arr, modality=str(meta.get("modality", "OT")), spatial_ndim=2, has_channels=arr.ndim == 4,
                 is_sequence=True, source=str(p), metadata=meta)


def count_frames(path: str | Path) -> int:
    """Number of frames of a video / animated GIF without decoding them (container packets; GIF blocks)."""
    p = Path(path)
    return _gif_count(p)[0] if _is_gif(p) else _av_count(p)


def read_frames_at(path: str | Path, select: Select | Sequence[int],
                   max_voxels: int = DEFAULT_MAX_VOXELS) -> SampledFrames:
    """Only some frames of a video / animated GIF, equal to `read_frames(path)[indices]` without ever holding
    the whole clip: `select` is the indices, or a function of the frame count giving them (e.g. 16 evenly
    spaced frames). The file is decoded once, in order; only the selected frames are converted to arrays.

    The frame count comes from the container (`count_frames`) and is checked against the decode: where they
    differ the decode's count wins (the selection is redone, with a second pass when needed), so the indices
    are always those the full decode would give.
    """
    p = Path(path)
    pick: Select = select if callable(select) else (lambda n, _s=tuple(int(i) for i in select): _s)
    gif = _is_gif(p)
    n_est = _gif_count(p)[0] if gif else _av_count(p)
    idx = _checked(pick, n_est, p) if n_est > 0 else np.zeros(0, np.int64)
    gray = False
    for _ in range(3):
        if gif:
            kept, n, gray, meta = _gif_pass(p, {int(i) for i in idx}, None, max_voxels)
        else:
            kept, n, meta = _av_pass(p, {int(i) for i in idx}, None, max_voxels)
        if n == n_est:
            break
        LOGGER.debug("%s: container lists %d frames, the decoder yields %d; sampling from %d", p, n_est, n, n)
        n_est = n
        idx = _checked(pick, n, p)
        if all(int(i) in kept for i in idx):
            break
    if any(int(i) not in kept for i in idx):
        raise InputError("the number of decodable frames changes from one read to the next (damaged file?)", p)
    _with_frame_time(meta)
    frames = np.stack([kept[int(i)] for i in idx]) if len(idx) else np.zeros((0,), np.uint8)
    if gif:
        frames = _grey_or_rgb(frames, gray)
        meta["gray"] = gray
    return SampledFrames(frames=frames, indices=np.asarray(idx, np.int64), n_frames=int(n_est), metadata=meta)


def _checked(pick: Select, n: int, p: Path) -> np.ndarray:
    idx = np.asarray(pick(n), np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"frame index out of range: the video has {n} frame(s), asked for frame "
                         f"{int(idx.max() if idx.max() >= n else idx.min())}", p)
    return idx


class VideoStudy(Image):
    """A video or animated GIF as a sequence `Image` that decodes only when asked.

    `.array` decodes every frame (as `read_video`); `.sample(select)` decodes in order and keeps only the
    selected frames; shape facts (`n_frames`, `spatial_shape`, `has_channels`, `is_sequence`) come from the
    container where they can. A one-frame GIF is a 2D image (`is_sequence` False), as `read_image` reads it.
    Errors are raised when the file is first used, naming it.
    """

    def __init__(self, path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
        p = Path(path)
        self._path = p
        self._max_voxels = int(max_voxels)
        self._array: np.ndarray | None = None
        self._gif: bool | None = None
        self._n: int | None = None  # frame count (container, then verified by a decode)
        self._hw: tuple[int, int] | None = None
        self._gray: bool | None = None
        self._metadata: dict[str, Any] | None = None
        self._last: SampledFrames | None = None  # the latest sample, reused when the same frames are asked again
        self.spacing = ()
        self.origin = ()
        self.direction = None
        self.modality = "OT"
        self.spatial_ndim = 2
        self.has_geometry = False
        self.source = str(p)
        self.__post_init__()

    # -- lazily known facts ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def decoded(self) -> bool:
        """True once every frame has been decoded into `.array`."""
        return self._array is not None

    def _is_gif_file(self) -> bool:
        if self._gif is None:
            self._gif = _is_gif(self._path)
        return self._gif

    def _probe(self) -> None:
        """Frame count, frame size and (video streams) the grey/colour pixel format, from the container."""
        if self._n is not None and self._hw is not None:
            return
        if self._is_gif_file():
            self._n, self._hw = _gif_count(self._path)
            return
        with _av_open(self._path) as container:
            stream = container.streams.video[0]
            self._hw = (int(stream.codec_context.height), int(stream.codec_context.width))
            meta = _with_frame_time(_av_meta(container, stream))
            if self._metadata is None:
                self._metadata = meta
            self._gray = meta["pix_fmt"].startswith("gray")
        self._n = _av_count(self._path)
        if self._n == 0:
            raise InputError("video holds no decodable frames (0 frames)", self._path)

    @property
    def array(self) -> np.ndarray:  # type: ignore[override]
        if self._array is None:
            arr, meta = _read(self._path, None, self._max_voxels)
            _with_frame_time(meta)
            self._metadata = {**meta, **(self._metadata or {})} if self._metadata else meta
            self._n = int(arr.shape[0])
            self._hw = (int(arr.shape[1]), int(arr.shape[2]))
            self._gray = arr.ndim == 3
            self._array = arr[0] if self._is_gif_file() and arr.shape[0] == 1 else arr
        return self._array

    @array.setter
    def array(self, value: np.ndarray) -> None:
        self._array = value

    @property
    def is_sequence(self) -> bool:  # type: ignore[override]
        if self._array is not None:
            return not (self._is_gif_file() and self._n == 1)
        if not self._is_gif_file():
            return True
        self._probe()
        return bool(self._n and self._n > 1)

    @is_sequence.setter
    def is_sequence(self, value: bool) -> None:
        if bool(value) != self.is_sequence:
            raise AttributeError("VideoStudy.is_sequence follows the file; use with_array() for a changed copy")

    @property
    def has_channels(self) -> bool:  # type: ignore[override]
        if self._array is not None:
            return self._array.ndim == (4 if self.is_sequence else 3)
        if self._gray is None:
            if self._is_gif_file():
                self._gray = _gif_pass(self._path, set(), None, self._max_voxels)[2]
            else:
                self._probe()
        return not self._gray

    @has_channels.setter
    def has_channels(self, value: bool) -> None:
        if bool(value) != self.has_channels:
            raise AttributeError("VideoStudy.has_channels follows the file; use with_array() for a changed copy")

    @property
    def metadata(self) -> dict[str, Any]:  # type: ignore[override]
        if self._metadata is None:
            if self._is_gif_file():
                self._metadata = {"format": "GIF"}
            else:
                self._probe()
        return self._metadata  # type: ignore[return-value]

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._metadata = dict(value)

    @property
    def n_frames(self) -> int:
        if self._array is not None or not self.is_sequence:
            return int(self.array.shape[0]) if self.is_sequence else 1
        self._probe()
        return int(self._n)  # type: ignore[arg-type]

    @property
    def n_channels(self) -> int:
        if self._array is not None:
            return super().n_channels
        return 3 if self.has_channels else 1  # decoded frames are grey (t, y, x) or RGB (t, y, x, 3)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        if self._array is not None:
            return super().spatial_shape
        self._probe()
        return tuple(self._hw)  # type: ignore[arg-type]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape `.array` has (frames, y, x[, 3]), from the container when not decoded."""
        if self._array is not None:
            return tuple(self._array.shape)
        lead = (self.n_frames,) if self.is_sequence else ()
        return (*lead, *self.spatial_shape, *((3,) if self.has_channels else ()))

    @property
    def nbytes(self) -> int:
        """Bytes of the full decode (uint8), known without decoding (read-ahead budgets use it)."""
        return int(np.prod(self.shape, dtype=np.int64))

    # -- reading ----------------------------------------------------------------------------------------
    def sample(self, select: Select | Sequence[int]) -> SampledFrames:
        """The selected frames (see `read_frames_at`), from the decoded array when there is one."""
        if self._array is not None and self.is_sequence:
            n = int(self._array.shape[0])
            pick = select if callable(select) else (lambda _n: select)
            idx = _checked(pick, n, self._path)  # type: ignore[arg-type]
            return SampledFrames(self._array[idx], idx, n, dict(self.metadata))
        if not callable(select) and self._last is not None:
            want = np.asarray(select, np.int64).reshape(-1)
            if want.size and np.isin(want, self._last.indices).all():  # frames sampled just before: no decode
                pos = {int(i): k for k, i in enumerate(self._last.indices)}
                rows = [pos[int(i)] for i in want]
                return SampledFrames(self._last.frames[rows], want, self._last.n_frames, dict(self._last.metadata))
        out = read_frames_at(self._path, select, self._max_voxels)
        self._last = out
        self._n = out.n_frames
        self._hw = (int(out.frames.shape[1]), int(out.frames.shape[2])) if out.frames.ndim >= 3 else self._hw
        if self._is_gif_file():
            self._gray = bool(out.metadata.get("gray"))
        if self._metadata is None:
            self._metadata = {k: v for k, v in out.metadata.items() if k != "gray"}
        return out

    def with_array(self, array: np.ndarray, **changes: Any) -> Image:
        """A plain in-memory `Image` with a new array (and optionally other fields changed)."""
        values = {f.name: getattr(self, f.name) for f in fields(Image) if f.name != "array"}
        values.update(changes)
        values["metadata"] = dict(values["metadata"])
        return Image(array, **values)

    def __repr__(self) -> str:
        return f"VideoStudy({str(self._path)!r}, decoded={self.decoded})"
