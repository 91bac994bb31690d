"""Honest splits: content hashes of cases, duplicate and cross-split leak detection, rare or malformed labels,
and masks that do not fit their image.

A case's hash is the SHA-256 of what the model would see (an array's dtype, shape and bytes; a file's bytes; a
folder's files in name order), so a copy of a training image under another name, in another folder or in
another split is found. Hashes are recorded in the RUN's splits.csv so `evaluate` can refuse test cases the
RUN trained on even when they come from another DATA.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.data.datasets import Dataset
from meddx.errors import DataError, InputError

LOGGER = logging.getLogger(__name__)
HASH_CHARS = 32  # 128 bits of SHA-256: collisions are not a practical concern
MIN_CASES_PER_CLASS = 5  # fewer cannot be learned, validated and tested; --allow-rare-classes overrides
_CHUNK = 1 << 20


def content_hash(item: Any) -> str:
    """Hex SHA-256 (truncated) of one case: an array, a file, or a folder of files (a DICOM series)."""
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        a = np.ascontiguousarray(item)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        return h.hexdigest()[:HASH_CHARS]
    p = Path(item)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    try:
        for f in files:
            if p.is_dir():
                h.update(str(f.relative_to(p)).encode() + b"\0")
            with open(f, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read to check for duplicates: {exc.strerror or exc}", p) from None
    return h.hexdigest()[:HASH_CHARS]


def case_hashes(ds: Dataset, index: Sequence[int] | np.ndarray | None = None) -> list[str]:
    """`content_hash` of each case (of `index` when given)."""
    idx = range(len(ds)) if index is None else [int(i) for i in index]
    return [content_hash(ds.items[i]) for i in idx]


def content_groups(ds: Dataset, hashes: list[str]) -> np.ndarray:
    """Split groups in which cases of identical content are joined (with their patients, when known), so that
    drawn splits never put a copy of a case on the other side of a split."""
    base = [str(p) for p in ds.patient_ids] if ds.patient_ids is not None else [f"#{i}" for i in range(len(ds))]
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[str, str] = {}
    for g, h in zip(base, hashes):
        other = first.setdefault(h, g)
        ra, rb = find(g), find(other)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.asarray([find(g) for g in base])


def check_no_duplicates(ds: Dataset, splits: np.ndarray, hashes: list[str] | None = None,
                        log: Any = None) -> list[str]:
    """Refuse files listed twice, and files of identical content in two splits (one line naming both). In arrays
    of a published set (npz: PneumoniaMNIST's train and val share 8 images) a later split's copy is recorded in
    the earlier split instead (train < val < test), logged, so it flatters neither model selection nor the test
    metrics. Updates `splits` in place; returns the hashes."""
    names = ds.item_names()
    arrays = isinstance(ds.items[0], np.ndarray)
    if not arrays:
        seen: dict[str, int] = {}
        for i, item in enumerate(ds.items):
            key = str(Path(item).resolve())
            if key in seen:
                raise DataError(f"the same file is listed twice: {names[seen[key]]} and {names[i]} "
                                "(duplicated row)", ds.source)
            seen[key] = i
    hashes = hashes if hashes is not None else case_hashes(ds)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        groups[h].append(i)
    moved = within = conflicts = 0
    rank = {"train": 0, "val": 1, "test": 2}
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda i: (rank.get(str(splits[i]), 3), i))
        first = members[0]
        for j in members[1:]:
            a, b = str(splits[first]), str(splits[j])
            if ds.task != "multilabel" and int(ds.labels[first]) != int(ds.labels[j]):
                what = (f"identical content with two labels: {names[first]} ({ds.class_names[int(ds.labels[first])]!r})"
                        f" and {names[j]} ({ds.class_names[int(ds.labels[j])]!r})")
                if not arrays:
                    raise DataError(f"{what}; keep one copy with the right label", ds.source)
                LOGGER.warning(f"warning: {what}")
                conflicts += 1
            if a == b:
                within += 1
            elif not arrays:  # files the user listed: fix the data, do not guess
                raise DataError(f"identical content in two splits: {names[first]} ({a}) and {names[j]} ({b}); "
                                "remove the copy so that no case is both learned from and evaluated on", ds.source)
            else:  # arrays of a published set (MedMNIST): the copy becomes a training case, loudly
                splits[j] = a
                moved += 1
    say = log or LOGGER.warning
    if moved:
        say(f"warning: {moved} validation/test case(s) have the content of a case in an earlier split; recorded in "
            "that split (splits.csv) so they flatter neither model selection nor test metrics")
    if within:
        LOGGER.info(f"{within} case(s) duplicate another case's content within the same split")
    return hashes


def bad_label_reason(name: str) -> str | None:
    """Why a class name cannot be a label (control characters such as a newline, or blank), else None."""
    if not str(name).strip():
        return "is blank"
    ctrl = [c for c in str(name) if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if ctrl:
        return f"contains the control character {ascii(ctrl[0])}"
    return None


def check_classes(ds: Dataset, splits: np.ndarray | None, allow_rare: bool = False,
                  min_cases: int = MIN_CASES_PER_CLASS) -> None:
    """Refuse labels with control characters and classes too rare to learn and validate (fewer than
    `min_cases` cases, none in training, or none in validation) unless `allow_rare`. Without `splits` (before
    splitting) only the labels and the class sizes are checked."""
    for n in ds.class_names:
        why = bad_label_reason(n)
        if why:
            raise DataError(f"label {ascii(n)} {why}; fix the label (a stray newline or tab in the manifest?)",
                            ds.source)
    if ds.task != "multilabel" and len(ds.class_names) < 2:
        raise DataError(f"only one class ({ds.class_names[0] if ds.class_names else 'none'}); a classifier needs at "
                        "least two (a manifest without a label column is for --task segmentation)", ds.source)
    if allow_rare or ds.task == "multilabel":
        return
    labels = np.asarray(ds.labels).astype(int)
    hint = "; add cases, merge or drop the class, or pass --allow-rare-classes"
    for k, n in enumerate(ds.class_names):
        total = int((labels == k).sum())
        if total < min_cases:
            raise DataError(f"class {n!r} has only {total} case(s) (at least {min_cases} are needed to learn, "
                            f"validate and test it){hint}", ds.source)
        for part in (("train", "val") if splits is not None else ()):
            in_part = splits == part
            if in_part.any() and not (labels[in_part] == k).any():
                raise DataError(f"class {n!r} has no case in the {'training' if part == 'train' else 'validation'} "
                                f"split ({total} in all){hint}", ds.source)


def _spatial_size(path: str) -> tuple[int, ...]:
    """Spatial shape of an image file, from the header when PIL can (2D pictures), else by reading it."""
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"):
        try:
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                if getattr(im, "n_frames", 1) == 1:
                    return (int(im.size[1]), int(im.size[0]))
        except Exception:  # noqa: BLE001 -- fall back to the full reader, which gives the proper error
            pass
    from meddx.io import read_image

    return tuple(int(s) for s in read_image(path).spatial_shape)


def check_mask_shapes(ds: Dataset, index: Sequence[int] | np.ndarray | None = None) -> None:
    """Each mask must have its image's size: a mask of another size is an error, never silently resized."""
    if ds.masks is None:
        return
    idx = range(len(ds)) if index is None else [int(i) for i in index]
    for i in idx:
        m = ds.masks[i]
        if m is None or isinstance(ds.items[i], np.ndarray):
            continue
        img, msk = _spatial_size(ds.items[i]), _spatial_size(m)
        if msk != img and msk[: len(img)] != img:
            raise DataError(f"mask is {'x'.join(map(str, msk))} but its image {Path(ds.items[i]).name} is "
                            f"{'x'.join(map(str, img))}; masks must have their image's size", m)


def read_recorded_splits(path: str | Path) -> dict[str, tuple[str, str]] | None:
    """{content hash: (split, item)} from a RUN's splits.csv; None when it is absent or records no hashes."""
    import csv

    p = Path(path)
    if not p.is_file():
        return None
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read: {exc}", p) from None
    if not rows or "sha256" not in rows[0]:
        return None
    out: dict[str, tuple[str, str]] = {}
    rank = {"train": 0, "val": 1, "test": 2}
    for r in rows:
        h, s = (r.get("sha256") or "").strip(), (r.get("split") or "").strip()
        if h and (h not in out or rank.get(s, 3) < rank.get(out[h][0], 3)):
            out[h] = (s, r.get("item") or "")
    return out


def recorded_split_of(ds: Dataset, recorded: dict[str, tuple[str, str]],
                      hashes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(split the RUN gave each case, "" when the RUN never saw it; the RUN's own item name of that case; hashes)."""
    hashes = hashes if hashes is not None else case_hashes(ds)
    got = [recorded.get(h, ("", "")) for h in hashes]
    return (np.asarray([g[0] for g in got], dtype="<U8"), np.asarray([g[1] for g in got], dtype=object), hashes)
