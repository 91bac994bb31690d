"""Image/mask pairs on disk: the LGG segmentation layout and any "folder of paired files".

A paired folder holds images next to their masks (`<stem>.<ext>` + `<stem>_mask.<ext>`),
either directly or in one subfolder per patient (the LGG layout:
`TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_10.tif` + `..._10_mask.tif`). The patient of
a pair is its first-level subfolder (files directly in the root are their own patient).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from meddx.data.datasets import IMAGE_SUFFIXES, Dataset
from meddx.errors import DataError, InputError
from meddx.utils import atomic_write_text

LESION, NORMAL = "lesion", "normal"
CLASS_NAMES = [LESION, NORMAL]  # alphabetical, as load_manifest orders them: same splits either way
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?P<ext>\.nii\.gz|\.[A-Za-z0-9]+)$", re.IGNORECASE)


def _split_ext(name: str) -> tuple[str, str]:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return name[:-7], name[-7:]
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot else (name, "")


def natural_key(p: Path) -> list[object]:
    """Sort key that orders numbered names as numbers: slice_2 before slice_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def _is_mask(p: Path) -> bool:
    return bool(_MASK_RE.match(p.name))


def is_paired_folder(root: str | Path) -> bool:
    """True for a folder (without manifest.csv) holding at least one `*_mask.*` file."""
    root = Path(root)
    if not root.is_dir() or (root / "manifest.csv").is_file():
        return False
    return any(f.is_file() and _is_mask(f) for f in root.rglob("*_mask*"))


def find_pairs(root: str | Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, patient) for every image with a `<stem>_mask.<ext>` partner, naturally sorted.

    Images without a mask are ignored; a mask without its image is an error (a broken copy).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder", root)
    files = [f for f in root.rglob("*") if f.is_file() and not f.name.startswith(".")]
    masks = [f for f in files if _is_mask(f)]
    if not masks:
        raise DataError("no image/mask pairs: expected files named <name>.<ext> with <name>_mask.<ext>", root)
    by_stem: dict[tuple[Path, str], Path] = {}
    for f in files:
        if _is_mask(f):
            continue
        stem, ext = _split_ext(f.name)
        if ext.lower() in IMAGE_SUFFIXES or ext.lower() == ".nii.gz":
            by_stem[(f.parent, stem)] = f
    pairs = []
    for m in masks:
        stem = _MASK_RE.match(m.name).group("stem")  # type: ignore[union-attr]
        img = by_stem.get((m.parent, stem))
        if img is None:
            raise DataError(f"mask {m.name} has no image {stem}.* next to it", m.parent)
        rel = m.parent.relative_to(root)
        patient = rel.parts[0] if rel.parts else stem
        pairs.append((img, m, patient))
    pairs.sort(key=lambda t: (t[2], natural_key(t[0])))
    return pairs


def _has_foreground(mask: Path) -> bool:
    from meddx.io import read_image

    return bool(np.any(np.asarray(read_image(mask).array) > 0))


def paired_folder_dataset(root: str | Path) -> Dataset:
    """A segmentation `Dataset` from a paired folder: label "lesion" when the mask has foreground."""
    root = Path(root)
    pairs = find_pairs(root)
    labels = np.asarray([0 if _has_foreground(m) else 1 for _, m, _ in pairs], dtype=int)
    return Dataset(items=[str(i) for i, _, _ in pairs], labels=labels, class_names=list(CLASS_NAMES),
                   task="binary", source=str(root), kind="paired",
                   patient_ids=np.asarray([p for _, _, p in pairs], dtype=str),
                   splits=np.full(len(pairs), "", dtype=object).astype("<U8"),
                   masks=[str(m) for _, m, _ in pairs])


def lgg_manifest(root: str | Path | Sequence[str | Path], out_csv: str | Path) -> Path:
    """Write a manifest CSV (path,label,patient_id,mask) for the LGG folder (or any paired folder, or several:
    e.g. `lgg/` and `lgg_more/` as one training set of 35 patients).

    Paths are written relative to the CSV's folder when possible (so the pair can move together),
    otherwise absolute. A patient found in two folders is an error (its slices would mix). Returns the CSV path.
    """
    out_csv = Path(out_csv)
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    parts = [paired_folder_dataset(r) for r in roots]
    seen: dict[str, str] = {}
    for d in parts:
        for pid in sorted(set(d.patient_ids.tolist())):  # type: ignore[union-attr]
            if pid in seen:
                raise DataError(f"patient {pid} is in both {seen[pid]} and {d.source}", d.source)
            seen[pid] = str(d.source)
    base = out_csv.resolve().parent

    def rel(p: str) -> str:
        ap = Path(p).resolve()
        try:
            return os.path.relpath(ap, base)
        except ValueError:  # another drive (Windows)
            return str(ap)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "patient_id", "mask"])
    for ds in parts:
        for item, lab, pid, m in zip(ds.items, ds.labels, ds.patient_ids, ds.masks):  # type: ignore[arg-type]
            w.writerow([rel(item), CLASS_NAMES[int(lab)], pid, rel(m)])
    atomic_write_text(out_csv, buf.getvalue())
    return out_csv
