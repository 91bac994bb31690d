"""Small files the tests make: noise PNGs, square-lesion masks and CSV manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_png(path: Path, seed: int, size: int = 64, mask: bool = False) -> Path:
    """A size x size greyscale PNG: uniform noise from `seed`, or with `mask` a white rectangle placed by it."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if mask:
        a = np.zeros((size, size), np.uint8)
        a[8 + seed % 8: 16 + seed % 8, 8:20] = 255
    else:
        a = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return path


def write_manifest(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    """Rows as a CSV manifest; the columns are the first row's keys unless given."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
