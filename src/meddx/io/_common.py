"""Small helpers shared by the readers (size limit, spacing clean-up)."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from meddx.errors import InputError

DEFAULT_MAX_VOXELS = 2**31


def check_size(shape: Sequence[int], max_voxels: int, path: str | Path) -> None:
    """Refuse images over `max_voxels` before their pixels are decoded."""
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > max_voxels:
        raise InputError(f"image too large: {n} voxels {tuple(int(s) for s in shape)} exceeds the limit "
                         f"of {max_voxels} (max_voxels)", path)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Keep what C/C++ libraries print straight to file descriptor 2 (ITK's MetaIO "Cannot open data file", ...)
    off the user's terminal; the reader turns the failure into one InputError line instead."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded use): nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def clean(values: Sequence[float], ndigits: int = 6) -> tuple[float, ...]:
    """Round away float32/float64 representation noise (1e-6 mm is far below any voxel)."""
    return tuple(round(float(v), ndigits) + 0.0 for v in values)
