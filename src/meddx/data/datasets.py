"""Datasets: MedMNIST-style npz, folder-per-class, or a CSV manifest -> one `Dataset`.

A `Dataset` holds, per case, either an in-memory array (npz) or a file path (read lazily
with `meddx.io.read_image`), its label, its patient (when known), the split it was given
by the source (when any) and an optional mask path. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import DataError, InputError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".gz", ".nrrd",
    ".mha", ".mhd", ".gif", ".mp4", ".avi", ".mov", ".npy",
}
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test", "": ""}


@dataclass
class Dataset:
    """Cases with labels, patients and source splits; items are arrays or file paths."""

    items: list[Any]
    labels: np.ndarray
    class_names: list[str]
    task: str  # "binary" | "multiclass" | "multilabel"
    source: str
    kind: str  # "npz" | "folder" | "manifest" | "arrays" (Dataset.from_arrays)
    patient_ids: np.ndarray | None = None
    splits: np.ndarray | None = None  # source-given split per case ("" when none)
    masks: list[str | None] | None = None
    spatial_ndim: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_arrays(cls, images: Any, labels: Any, class_names: Sequence[str] | None = None,
                    patient_ids: Sequence[Any] | None = None, splits: Sequence[str] | None = None,
                    source: str = "arrays") -> "Dataset":
        """In-memory cases: `images` (N, H, W[, C]) or (N, D, H, W[, C]), `labels` (N,) class indices or
        (N, K) 0/1 for multilabel; optional per-case `patient_ids` and `splits` (train / val / test)."""
        images = np.asarray(images)
        y = np.asarray(labels)
        if len(images) != len(y):
            raise DataError(f"{len(images)} images but {len(y)} labels", source)
        if len(images) == 0:
            raise DataError("no cases", source)
        _check_finite(images, Path(source))
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] > 1:
            task, y = "multilabel", y2.astype(np.float32)
            default = [str(i) for i in range(y2.shape[1])]
        else:
            y = y2[:, 0].astype(int)
            if y.min() < 0:
                raise DataError(f"labels must be non-negative class indices, found {y.min()}", source)
            default = [str(i) for i in range(max(int(y.max()) + 1, 2))]
            task = "binary" if len(class_names or default) == 2 else "multiclass"
        names = list(class_names) if class_names is not None else default
        if task != "multilabel" and int(y.max()) >= len(names):
            raise DataError(f"labels go up to {int(y.max())} but {len(names)} class names were given", source)
        split_arr = None
        if splits is not None:
            split_arr = np.asarray([_SPLIT_ALIASES.get(str(v).strip().lower(), "?") for v in splits], dtype=str)
            if len(split_arr) != len(images) or "?" in split_arr:
                raise DataError("splits must give train, val or test for every case", source)
        return cls(items=list(images), labels=y, class_names=names, task=task, source=source, kind="arrays",
                   patient_ids=None if patient_ids is None else np.asarray([str(v) for v in patient_ids]),
                   splits=split_arr, spatial_ndim=_npz_spatial_ndim(images.shape[1:], Path(source)),
                   extra={"item_names": [f"{source}[{i}]" for i in range(len(images))]})

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_source_splits(self) -> bool:
        return self.splits is not None and bool(np.all(self.splits != ""))

    def subset(self, index: Sequence[int] | np.ndarray) -> "Dataset":
        """The cases at `index`, keeping all per-case fields aligned."""
        idx = np.asarray(index, dtype=int)
        return Dataset(
            items=[self.items[i] for i in idx],
            labels=self.labels[idx],
            class_names=list(self.class_names),
            task=self.task,
            source=self.source,
            kind=self.kind,
            patient_ids=None if self.patient_ids is None else self.patient_ids[idx],
            splits=None if self.splits is None else self.splits[idx],
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            spatial_ndim=self.spatial_ndim,
            extra=dict(self.extra),
        )

    def item_names(self) -> list[str]:
        """A printable identifier per case (file path, or `npz:split[index]`)."""
        names = self.extra.get("item_names")
        if names is not None:
            return list(names)
        return [str(x) if not isinstance(x, np.ndarray) else f"case{i}" for i, x in enumerate(self.items)]

    def class_counts(self) -> dict[str, int]:
        """Cases per class (multilabel: positives per label)."""
        if self.task == "multilabel":
            return {n: int(c) for n, c in zip(self.class_names, self.labels.sum(axis=0))}
        counts = np.bincount(self.labels.astype(int), minlength=self.n_classes)
        return {n: int(c) for n, c in zip(self.class_names, counts)}


def load_dataset(path: str | Path) -> Dataset:
    """Open DATA: a `.npz` file, a folder with one subfolder per class, or a CSV manifest."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    if p.is_dir():
        manifest = p / "manifest.csv"
        if manifest.is_file():
            return load_manifest(manifest)
        return load_class_folders(p)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz_dataset(p)
    if suffix in {".csv", ".tsv"}:
        return load_manifest(p)
    raise InputError("not a dataset: expected a .npz file, a .csv manifest or a folder with one subfolder per class", p)


# -- MedMNIST-style npz ---------------------------------------------------------------

def load_npz_dataset(path: str | Path) -> Dataset:
    """MedMNIST layout: `{train,val,test}_images` and `_labels`; a missing split is absent."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = set(npz.files)
            present = [s for s in SPLITS if f"{s}_images" in keys]
            if not present:
                raise DataError(
                    f"npz has no '<split>_images' arrays (expected train_images/train_labels, val_..., test_...; "
                    f"found keys: {', '.join(sorted(keys)) or 'none'})", p)
            arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for s in present:
                if f"{s}_labels" not in keys:
                    raise DataError(f"npz has '{s}_images' but no '{s}_labels'", p)
                images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
                if len(images) != len(labels):
                    raise DataError(f"'{s}_images' has {len(images)} cases but '{s}_labels' has {len(labels)}", p)
                if len(images) == 0:
                    raise DataError(f"split '{s}' is empty (0 cases); drop its arrays or fill them", p)
                if images.ndim < 3:
                    raise DataError(f"'{s}_images' has shape {images.shape}; expected (n, H, W[, ...])", p)
                if labels.dtype.kind not in "biuf":
                    raise DataError(f"'{s}_labels' holds {labels.dtype} values; labels must be integer class "
                                    "indices (0, 1, ...)", p)
                arrays[s] = (images, labels)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise InputError(f"cannot read npz: {exc}", p) from None
    except MemoryError:
        raise InputError("not enough memory for its arrays (do the headers declare absurd shapes?); use a machine "
                         "with more memory or split the data into smaller files", p) from None

    shapes = {s: a[0].shape[1:] for s, a in arrays.items()}
    if len({tuple(v) for v in shapes.values()}) > 1:
        raise DataError(f"splits have different image shapes: {shapes}", p)
    images_all = np.concatenate([arrays[s][0] for s in present])
    labels_all = np.concatenate([np.asarray(arrays[s][1]).reshape(len(arrays[s][1]), -1) for s in present])
    split_all = np.concatenate([np.full(len(arrays[s][0]), s, dtype=object) for s in present]).astype(str)
    _check_finite(images_all, p)
    sample_shape = images_all.shape[1:]
    spatial_ndim = _npz_spatial_ndim(sample_shape, p)

    if labels_all.shape[1] > 1:
        task = "multilabel"
        labels = labels_all.astype(np.float32)
        class_names = [str(i) for i in range(labels.shape[1])]
    else:
        labels = labels_all[:, 0].astype(int)
        if labels.min() < 0:
            raise DataError(f"labels must be non-negative class indices, found {labels.min()}", p)
        n = int(labels.max()) + 1
        class_names = [str(i) for i in range(max(n, 2))]
        task = "binary" if len(class_names) == 2 else "multiclass"
        class_names = _medmnist_label_names(p, class_names)
    names = [f"{p.name}:{s}[{i}]" for s in present for i in range(len(arrays[s][0]))]
    return Dataset(items=list(images_all), labels=labels, class_names=class_names, task=task,
                   source=str(p), kind="npz", splits=split_all, spatial_ndim=spatial_ndim,
                   extra={"item_names": names, "splits_present": present})


def _npz_spatial_ndim(sample_shape: tuple[int, ...], path: Path) -> int:
    if len(sample_shape) == 2:
        return 2
    if len(sample_shape) == 3:
        # (H, W, C) with few channels is a 2D colour image; otherwise a (D, H, W) volume
        return 2 if sample_shape[-1] in (1, 3, 4) else 3
    if len(sample_shape) == 4:
        return 3
    raise DataError(f"images of shape {sample_shape} are neither 2D nor 3D", path)


def _medmnist_label_names(path: Path, default: list[str]) -> list[str]:
    """Use MedMNIST's published label names when the file name names a known dataset."""
    try:
        from meddx.data.medmnist import label_names_for
    except ImportError:
        return default
    names = label_names_for(path.name)
    return names if names and len(names) == len(default) else default


# -- folder per class ----------------------------------------------------------------

def _is_image_file(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    if p.name.endswith("_mask.png") or p.name.endswith("_mask.tif"):
        return False
    return p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == ""


def load_class_folders(root: str | Path) -> Dataset:
    """One subfolder per class; every image file inside is a case of that class."""
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        files = [f for f in root.iterdir() if f.is_file()]
        if not files:
            raise InputError("empty folder: no class subfolders and no images", root)
        raise InputError("expected one subfolder per class (e.g. normal/, lesion/) or a manifest.csv", root)
    items: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for k, d in enumerate(class_dirs):
        files = sorted(f for f in d.rglob("*") if f.is_file() and _is_image_file(f))
        if not files:
            empty.append(d.name)
        items.extend(str(f) for f in files)
        labels.extend([k] * len(files))
    if empty:
        raise DataError(f"class folder(s) with no images: {', '.join(empty)}", root)
    if len(class_dirs) < 2:
        raise DataError(f"only one class folder ({class_dirs[0].name}); need at least two classes", root)
    names = [d.name for d in class_dirs]
    return Dataset(items=items, labels=np.asarray(labels, dtype=int), class_names=names,
                   task="binary" if len(names) == 2 else "multiclass", source=str(root), kind="folder",
                   splits=np.full(len(items), "", dtype=object).astype("<U8"))


# -- CSV manifest --------------------------------------------------------------------

# a manifest with a mask column and no label column (segmentation): each row is labelled by whether it names a mask
MASK_LABELS = ("no mask", "mask")


def load_manifest(path: str | Path, class_names: Sequence[str] | None = None) -> Dataset:
    """CSV with columns path,label[,patient_id,split,mask] (or path,mask[,...] for segmentation); paths
    relative to the CSV."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest: {exc}", path) from None
    if not rows:
        raise DataError("manifest has no rows", path)
    columns = {c.strip().lower() for c in rows[0].keys() if c}
    labelled = "label" in columns  # a segmentation manifest (path,mask) may go without: see MASK_LABELS
    missing = {"path"} - columns if "mask" in columns else {"path", "label"} - columns
    if missing:
        raise DataError(f"manifest lacks column(s) {', '.join(sorted(missing))} (has: {', '.join(sorted(columns))})", path)
    for line, r in enumerate(rows, start=2):
        if None in r:  # csv.DictReader puts the cells beyond the header under the key None
            raise DataError(f"line {line} has {len(r) - 1 + len(r[None])} fields but the header names {len(r) - 1} "
                            "(an unquoted comma in a path or label?)", path)
    rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in rows]
    base = path.parent
    items, raw_labels, patients, splits, masks = [], [], [], [], []
    for line, r in enumerate(rows, start=2):
        if not r["path"]:
            raise DataError(f"line {line}: empty path", path)
        f = (base / r["path"]).resolve() if not Path(r["path"]).is_absolute() else Path(r["path"])
        if not f.exists():
            raise InputError(f"file named on manifest line {line} does not exist: {r['path']}", path)
        if labelled and r["label"] == "":
            raise DataError(f"line {line}: empty label for {r['path']}", path)
        split = _SPLIT_ALIASES.get(r.get("split", "").lower())
        if split is None:
            raise DataError(f"line {line}: unknown split '{r.get('split')}' (use train, val or test)", path)
        m = r.get("mask", "")
        if m:
            mf = (base / m).resolve() if not Path(m).is_absolute() else Path(m)
            if not mf.exists():
                raise InputError(f"mask named on manifest line {line} does not exist: {m}", path)
            m = str(mf)
        items.append(str(f))
        raw_labels.append(r["label"] if labelled else MASK_LABELS[bool(m)])
        patients.append(r.get("patient_id", ""))
        splits.append(split)
        masks.append(m or None)

    if class_names is None:
        class_names = _sorted_labels(set(raw_labels))
    else:
        unknown = sorted(set(raw_labels) - set(class_names))
        if unknown:
            raise DataError(f"unknown label(s) {', '.join(unknown)}; the model knows {', '.join(class_names)}", path)
    if labelled and len(class_names) < 2:
        raise DataError(f"only one label value ({class_names[0]}); need at least two classes", path)
    index = {n: i for i, n in enumerate(class_names)}
    labels = np.asarray([index[v] for v in raw_labels], dtype=int)
    has_patients = any(patients)
    if has_patients and not all(patients):
        raise DataError("patient_id is given for some rows but empty for others", path)
    return Dataset(items=items, labels=labels, class_names=list(class_names),
                   task="binary" if len(class_names) == 2 else "multiclass", source=str(path), kind="manifest",
                   patient_ids=np.asarray(patients, dtype=str) if has_patients else None,
                   splits=np.asarray(splits, dtype=object).astype("<U8"),
                   masks=masks if any(masks) else None)


def _sorted_labels(values: set[str]) -> list[str]:
    """Numeric labels in numeric order, otherwise alphabetical."""
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _check_finite(arr: np.ndarray, path: Path) -> None:
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputError(f"images contain {bad} NaN/inf values", path)


def describe(ds: Dataset, split_of: np.ndarray | None = None) -> dict[str, Any]:
    """Class counts overall and per split, and the imbalance ratio, for printing and the RUN folder."""
    out: dict[str, Any] = {"source": ds.source, "kind": ds.kind, "task": ds.task, "n": len(ds),
                           "classes": ds.class_names, "counts": ds.class_counts()}
    if ds.patient_ids is not None:
        out["patients"] = int(len(set(ds.patient_ids)))
    if split_of is not None:
        out["splits"] = {}
        for s in SPLITS:
            idx = np.flatnonzero(split_of == s)
            if len(idx):
                sub = ds.subset(idx)
                entry: dict[str, Any] = {"n": len(idx), "counts": sub.class_counts()}
                if sub.patient_ids is not None:
                    entry["patients"] = int(len(set(sub.patient_ids)))
                out["splits"][s] = entry
    counts = [c for c in out["counts"].values()]
    out["imbalance_ratio"] = round(max(counts) / max(min(counts), 1), 2) if counts else None
    return out


def format_summary(summary: dict[str, Any], class_weights: bool | None = None) -> str:
    """Readable class-count table printed before training; `class_weights` (whether training balances the classes,
    None: not applicable) is said beside a notable imbalance."""
    names = summary["classes"]
    lines = [f"data: {summary['source']} ({summary['kind']}, {summary['task']}, {summary['n']} cases"
             + (f", {summary['patients']} patients" if "patients" in summary else "") + ")"]
    width = max(8, *(len(n) for n in names))
    header = f"  {'split':<6}" + "".join(f"{n:>{width + 2}}" for n in names) + f"{'total':>9}"
    lines.append(header)
    for s, entry in summary.get("splits", {}).items():
        counts = entry["counts"]
        lines.append(f"  {s:<6}" + "".join(f"{counts[n]:>{width + 2}}" for n in names) + f"{entry['n']:>9}")
    ratio = summary.get("imbalance_ratio")
    if ratio and ratio > 1.5:
        how = {None: "", True: " -- training uses balanced class weights",
               False: " -- training is unweighted (--class-weights balances the classes)"}[class_weights]
        lines.append(f"  class imbalance {ratio}:1{how}")
    return "\n".join(lines)


def most_common(values: Sequence[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]
