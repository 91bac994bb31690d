"""The studies of a prediction job: INPUT arguments and/or a `--manifest STUDIES.csv`, in job order, each with the
name it is given in outputs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from meddx.errors import ConfigError, InputError


@dataclass(frozen=True)
class Study:
    """One study of a job: its 0-based `index` (row order; outputs are numbered index + 1), where it is read from,
    and the manifest's `study_id` when it gave one."""

    index: int
    path: Path
    study_id: str | None = None

    @property
    def name(self) -> str:
        """The study's name in predictions.csv: its manifest study_id, else the input path as given."""
        return self.study_id if self.study_id else str(self.path)


def read_manifest(path: str | Path) -> list[tuple[Path, str | None]]:
    """(path, study_id or None) per row of a STUDIES.csv: a `path` column (relative paths resolve against the CSV's
    folder) and an optional `study_id` column naming the study in outputs. Each row is one study (a file, a DICOM
    series folder, or a sequence RUN's folder of frames); files are checked when they are read."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such manifest file", p)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise InputError("manifest needs a `path` column", p)
            reader.fieldnames = fields
            rows = [(reader.line_num, (r.get("path") or "").strip(), (r.get("study_id") or "").strip() or None)
                    for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"unreadable manifest: {exc}", p) from None
    out, seen = [], set()
    for line, raw, sid in rows:
        if not raw:
            raise InputError(f"line {line}: empty path", p)
        if sid is not None:
            if sid in seen:
                raise InputError(f"line {line}: study_id {sid!r} appears twice (outputs are named by it)", p)
            seen.add(sid)
        f = Path(raw).expanduser()
        out.append((f if f.is_absolute() else p.parent / f, sid))
    if not out:
        raise InputError("manifest lists no studies", p)
    return out


def collect_studies(files: Iterable[Path], manifest: str | Path | None = None) -> list[Study]:
    """The job's studies: expanded INPUT `files` first, then the manifest's rows, numbered in that order."""
    pairs: list[tuple[Path, str | None]] = [(Path(f), None) for f in files]
    if manifest is not None:
        pairs += read_manifest(manifest)
    if not pairs:
        raise ConfigError("give at least one INPUT (or --manifest STUDIES.csv)")
    return [Study(i, f, sid) for i, (f, sid) in enumerate(pairs)]


def chunks(studies: Sequence[Study], size: int) -> list[list[Study]]:
    """Consecutive runs of `size` studies (the last may be shorter)."""
    return [list(studies[i: i + size]) for i in range(0, len(studies), size)]
