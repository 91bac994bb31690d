"""What every command shares: the `meddx` logger, expanding INPUT arguments, safe output names, CSV writing."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from meddx.errors import InputError
from meddx.utils import atomic_write_text

Log = Callable[[str], None]
LOGGER = logging.getLogger("meddx")


def logger_or(log: Log | None) -> Log:
    """`log` when given, else the `meddx` logger's info (the CLI prints it; a library user configures it)."""
    return log if log is not None else LOGGER.info


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand INPUT arguments: files, DICOM series folders, or folders of images."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError("no such file or folder", p)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise InputError("empty folder", p)
            from meddx.io.dicom import looks_like_dicom

            if any(looks_like_dicom(f) for f in files[:5]):
                out.append(p)  # a DICOM series
            else:
                out.extend(f for f in files if not f.name.endswith(("_mask.png", "_mask.tif")))
        else:
            out.append(p)
    return out


def safe_stem(p: Path) -> str:
    """A file-name-safe stem of an input (extension dropped, at most 40 characters)."""
    name = p.name
    for suf in (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nii", ".mha"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "input"


def write_csv(path: Path, rows: list[dict[str, Any]], empty_header: list[str] | None = None) -> None:
    """Rows (columns in first-seen order) written atomically; `empty_header` when there are no rows."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or (empty_header or ["input"]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
