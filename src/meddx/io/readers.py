"""Format dispatch for `read_image` (to be filled by the io work)."""

from __future__ import annotations

from pathlib import Path

from meddx.io.image import Image


def read_image(path: str | Path, series_uid: str | None = None) -> Image:
    raise NotImplementedError
