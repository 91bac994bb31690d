"""What every command shares: the `meddx` logger, expanding and reading INPUT arguments as the RUN reads them,
choosing the trainer for DATA and the evaluator for a RUN, safe output names, CSV writing."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from meddx.errors import InputError
from meddx.utils import atomic_write_text

Log = Callable[[str], None]
LOGGER = logging.getLogger("meddx")


@contextlib.contextmanager
def without_optional_imports(names: Sequence[str] = ("sklearn", "pandas", "matplotlib")) -> Iterator[None]:
    """Within the block, importing `names` fails with ImportError. Importing TensorFlow pulls them in only through
    Keras's optional scikit-learn wrappers and pandas adapters (each import guarded by `except ImportError`), and
    meddx predict never uses those: measured on the loaded 2-core machine, `import tensorflow, keras` took
    10.5-17.1 s instead of 19.3-25.5 s. The packages import normally after the block (e.g. matplotlib for
    overlays)."""
    import importlib.abc

    class _Skip(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name.split(".")[0] in names:
                raise ImportError(f"{name}: not imported while TensorFlow starts")
            return None

    finder = _Skip()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def logger_or(log: Log | None) -> Log:
    """`log` when given, else the `meddx` logger's info (the CLI prints it; a library user configures it)."""
    return log if log is not None else LOGGER.info


def expand_inputs(paths: Sequence[str | Path], sequences: bool = False) -> list[Path]:
    """Expand INPUT arguments: files, DICOM series folders, or folders of images.

    `sequences` (a sequence RUN): a folder of slice images is ONE study (its numbered slices are the frames,
    read by `read_input`), and a single still image (PNG/JPEG/BMP) is refused here, before anything is
    predicted or written. Otherwise a non-DICOM folder holds separate images (or videos), one study each."""
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

            if any(looks_like_dicom(f) for f in files[:5]) or (sequences and _study_kind(p) == "sequence"):
                out.append(p)  # a DICOM series, or a sequence RUN's folder of slice images
            else:
                out.extend(f for f in files if not f.name.endswith(("_mask.png", "_mask.tif")))
        elif sequences and _study_kind(p) == "image":
            raise InputError(NOT_A_SEQUENCE, p)
        else:
            out.append(p)
    return out


def _study_kind(path: Path) -> str | None:
    from meddx.train.sequence import study_kind

    return study_kind(path)


NOT_A_SEQUENCE = ("is a single image; this RUN's sequence model needs a video, cine, DICOM series or a folder of "
                  "numbered slice images")


def read_input(path: str | Path, sequences: bool = False) -> Any:
    """One INPUT as an `Image`, as the RUN reads it: for a sequence RUN (`sequences`) through
    `meddx.transforms.frames.read_study` (a folder of numbered slice images is one study of frames; an input
    that is not a frame sequence is an InputError naming it); otherwise `meddx.io.read_image`."""
    if not sequences:
        from meddx.io import read_image

        return read_image(path)
    from meddx.errors import naming
    from meddx.transforms.frames import check_frames, read_study

    with naming(path):
        image = read_study(path)
        check_frames(image)
    return image


def reads_sequences(predictor: Any) -> bool:
    """True when `predictor` classifies frame sequences (its inputs are read by `read_input(..., sequences=True)`)."""
    return getattr(predictor, "kind", None) == "sequence_classifier"


def choose_trainer(data: Any, cfg: Any, model: str | None = None,
                   log: Log | None = None) -> tuple[Callable[..., Any], Any]:
    """(training function, config to train with) for DATA: the one decision `meddx train` and `meddx.train()` share.

    Segmentation tasks train a segmenter; a sequence model (`model`, or with none named, a non-default
    `cfg.model`, e.g. from a config file) or sequence data with no model named train a sequence classifier
    (`cfg.model` set to the chosen one); everything else an image classifier. DATA mixing sequences and single
    images is a DataError before anything is written. Each function is called as `fit(data, out, cfg, ...)`."""
    from meddx.train.config import TrainConfig

    if cfg.task == "slice-labelling":
        return _train_slice_labeller, cfg
    if cfg.task == "segmentation":
        from meddx.train.segmentation import train_segmenter

        return train_segmenter, cfg
    from meddx.train.sequence import choose_sequence_model, train_sequence_classifier

    requested = model or (cfg.model if cfg.model != TrainConfig.model else None)
    sequence_model = choose_sequence_model(data, requested, log)
    if sequence_model is not None:
        return train_sequence_classifier, cfg.updated({"model": sequence_model})
    from meddx.train.fit import train

    return train, cfg


def _train_slice_labeller(data: Any, out: str | Path, cfg: Any, overwrite: bool = False, **_: Any) -> dict[str, Any]:
    """`classic.slice_training.train_slice_labeller` called as the other trainers are (`fit(data, out, cfg)`)."""
    from meddx.classic.slice_training import train_slice_labeller

    return train_slice_labeller(data, out, smoother=cfg.smoother, seed=cfg.seed, test_fraction=cfg.test_fraction,
                                image_size=cfg.image_size, overwrite=overwrite, config=cfg.to_dict())


def evaluator_for(predictor: Any) -> Callable[..., dict[str, Any]]:
    """The `meddx.app.evaluate` function for a predictor's kind, called as `run(predictor, data, out, split=...)`."""
    from meddx.app import evaluate as ev
    from meddx.errors import ConfigError

    runs = {"classifier": ev.evaluate_classifier, "segmenter": ev.evaluate_segmenter,
            "sequence_classifier": ev.evaluate_sequences, "slice_labeller": ev.evaluate_slice_labeller}
    if predictor.kind not in runs:
        raise ConfigError(f"evaluating a {predictor.kind} RUN is not supported yet", getattr(predictor, "path", None))
    return runs[predictor.kind]


def study_name(index: int) -> str:
    """The name a study gets in outputs by default: study_001, study_002 ... (1-based, job order)."""
    return f"study_{index + 1:03d}"


def pseudonymised(studies: Sequence[Any], include_phi: bool = False) -> list[Any]:
    """The job's studies named study_001, study_002 ... in every output (CSV values, file names, log lines) unless
    `include_phi`: input file and folder names often carry a patient's name or ID. A manifest's own `study_id` is
    the name its author chose for outputs and is kept."""
    import dataclasses

    if include_phi:
        return list(studies)
    return [dataclasses.replace(s, study_id=s.study_id or study_name(s.index)) for s in studies]


def safe_stem(p: Path) -> str:
    """A file-name-safe stem of an input (extension dropped, at most 40 characters)."""
    name = p.name
    for suf in (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nii", ".mha"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "input"


class CsvStream:
    """Rows written to a CSV as they come (bounded memory), with exactly the text `write_csv` gives the same rows:
    columns in first-seen order (a row bringing a new column has the file rewritten once, streaming, at close).
    Use as a context manager: the file appears atomically on success, nothing on error."""

    def __init__(self, path: Path, empty_header: list[str] | None = None) -> None:
        from meddx.utils import atomic_path

        self.path, self.empty_header = Path(path), empty_header
        self._atomic = atomic_path(self.path)
        self.columns: list[str] = []
        self.count = 0
        self._grown = False

    def __enter__(self) -> "CsvStream":
        self._tmp = self._atomic.__enter__()
        self._fh = self._tmp.open("w", newline="", encoding="utf-8")
        self._writer: Any = None
        return self

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        new = [k for k in row if k not in self.columns]
        if new:
            self._grown = self._writer is not None
            self.columns.extend(new)
            if self._writer is None:
                self._writer = csv.DictWriter(self._fh, fieldnames=self.columns)
                self._writer.writeheader()
        self._writer.writerow(row)
        self.count += 1

    def __exit__(self, *exc: Any) -> Any:
        if exc[0] is None and self._writer is None:
            csv.DictWriter(self._fh, fieldnames=self.empty_header or ["input"]).writeheader()
        self._fh.close()
        if exc[0] is None and self._grown:  # first rows were written under a shorter header: widen them
            widened = self._tmp.with_name(self._tmp.name + ".w")
            try:
                with self._tmp.open(newline="", encoding="utf-8") as src, \
                        widened.open("w", newline="", encoding="utf-8") as dst:
                    reader = csv.reader(src)
                    next(reader)
                    w = csv.writer(dst)
                    w.writerow(self.columns)
                    for cells in reader:
                        w.writerow(cells + [""] * (len(self.columns) - len(cells)))
                os.replace(widened, self._tmp)
            finally:
                if widened.exists():
                    widened.unlink()
        return self._atomic.__exit__(*exc)


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
