"""A study's frames as a sequence model's input: sample, preprocess each frame as a 2D image, pad, mask.

One function for training (`meddx.train.sequence`) and inference (`meddx.infer.SequenceClassifier`), so both
feed the model exactly the same frames. A study is a sequence `Image` with 2D frames (video, cine, DICOM
multi-frame) or a 3D volume read as its slices along the first array axis. No TensorFlow here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.data.sequences import sample_frames
from meddx.errors import InputError

__all__ = ["check_frames", "read_study", "sequence_input"]

_SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def check_frames(image: Any) -> None:
    """InputError unless `image` is a sequence of 2D frames or a 3D volume (a slice stack)."""
    if image.is_sequence and image.spatial_ndim == 3:
        raise InputError("is a series of 3D volumes (4D); sequence models take 2D frames (video, cine, slice "
                         "stack)", image.source or None)
    if not (image.is_sequence or image.spatial_ndim == 3):
        raise InputError("is not a frame sequence (video, cine, slice stack); a sequence model needs one",
                         image.source or None)


def sequence_input(image: Any, prep: Any, frames: int | None, sampling: str = "uniform",
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model input (T, H, W, C), frame mask (T,), input frame index of each model frame) for one study.

    `sampling` "uniform": `frames` evenly spaced frames (repeated when the study is shorter); "all": every
    frame. Each sampled frame goes through `prep` (a 2D `Preprocessing`); any padding is all-zero frames,
    which the sequence models mask out.
    """
    check_frames(image)
    n = int(image.array.shape[0])
    idx = sample_frames(n, None if sampling == "all" else frames, sampling)
    x = prep.batch([image.array[k] for k in idx], progress=progress)
    t = len(idx) if sampling == "all" else max(len(idx), frames or 0)
    out = np.zeros((t, *x.shape[1:]), np.float32)
    out[: len(idx)] = x
    mask = np.zeros(t, bool)
    mask[: len(idx)] = True
    return out, mask, np.asarray(idx)


def read_study(path: str | Path) -> Any:
    """A study as an `Image`: anything `meddx.io.read_image` reads, or a folder of numbered slice images
    (PNG/TIFF/JPEG, ordered by slice number) as a sequence of 2D frames."""
    from meddx.io import read_image
    from meddx.io.image import Image

    p = Path(path)
    if p.is_dir() and any(c.is_file() and c.suffix.lower() in _SLICE_SUFFIXES for c in p.iterdir()):
        from meddx.data.sequences import load_sequence

        seq = load_sequence(p, normalise=False)
        frames = np.asarray(seq.frames)
        return Image(frames, spatial_ndim=2, has_channels=frames.ndim == 4, is_sequence=True, source=str(p))
    return read_image(p)
