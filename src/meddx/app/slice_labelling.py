"""`meddx predict` / `meddx report` for a slice-labelling RUN: which slices of each stack hold the lesion.

INPUT is a stack: a folder of numbered slices (`<name>_<n>.png|tif`, masks `*_mask.*` ignored), a DICOM series
folder or a 3D volume (slices along its first axis). predictions.csv has one row per stack (the lesion's extent:
first-last slice number, slice count, runs, length in mm when the slice spacing is known) and slices.csv one row
per slice (raw and smoothed probability/label); the report has a "Lesion extent along the stack" section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.app.common import Log, logger_or, write_csv
from meddx.errors import InputError, naming

_SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def read_stack(path: str | Path) -> tuple[Any, list[int] | None]:
    """(Image of the stack, slice numbers from the file names or None), with a one-line error for a folder that
    holds no slices."""
    from meddx.transforms.frames import read_study

    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    numbers = None
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
        if any(f.suffix.lower() in _SLICE_SUFFIXES for f in files):
            from meddx.data.sequences import list_slice_files

            numbers = [n for n, _, _ in list_slice_files(p)]
        else:
            from meddx.io.dicom import looks_like_dicom

            if not any(looks_like_dicom(f) for f in files[:5]):
                raise InputError("stack folder holds no slice images (.tif/.png/.jpg/.bmp) and no DICOM series", p)
    with naming(p):
        return read_study(p), numbers


def _runs_text(runs: list[list[int]]) -> str:
    return " ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def slice_spacing_mm(image: Any) -> float | None:
    """The distance between slices in mm when the input says it (DICOM series, NIfTI volume), else None (a folder
    of PNG/TIFF slices carries no spacing)."""
    if not getattr(image, "has_geometry", False) or getattr(image, "spatial_ndim", 0) != 3:
        return None
    sp = tuple(getattr(image, "spacing", ()) or ())
    return float(sp[0]) if sp and np.isfinite(sp[0]) and sp[0] > 0 else None


def lesion_extent(pred: Any) -> dict[str, Any]:
    """The lesion's extent along the stack: first-last slice (numbers), slice count, runs and, when the slice
    spacing is known, the length in mm from the first lesion slice to the last (slices x spacing)."""
    d = pred.details
    dz = slice_spacing_mm(pred.image)
    n, total = int(d["n_lesion_slices"]), int(d["n_slices"])
    span = None if d.get("first_index") is None else int(d["last_index"]) - int(d["first_index"]) + 1
    length = None if (dz is None or span is None) else round(span * dz, 2)
    return {"n_lesion_slices": n, "n_slices": total, "first_slice": d["first_slice"], "last_slice": d["last_slice"],
            "runs": _runs_text(d["lesion_runs_numbers"]), "span_slices": span, "slice_spacing_mm": dz,
            "length_mm": length}


def _extent_report(pred: Any) -> dict[str, Any]:
    """The report's 'Lesion extent along the stack' section: a sentence and a key/value table."""
    e = lesion_extent(pred)
    smoother = str(pred.details["smoother"]).upper()
    if not e["n_lesion_slices"]:
        return {"sentence": f"No slice labelled as lesion ({e['n_slices']} slices, {smoother} smoothing).",
                "rows": [["Slices with lesion", f"0 of {e['n_slices']}"]]}
    if e["length_mm"] is not None:
        length = f"{e['length_mm']:.1f} mm ({e['span_slices']} slices × {e['slice_spacing_mm']:.3g} mm)"
    else:
        length = "unknown: the slices carry no spacing (a folder of slice images)"
    rows = [["Slices with lesion", f"{e['n_lesion_slices']} of {e['n_slices']}"],
            ["First–last lesion slice", f"{e['first_slice']}–{e['last_slice']}"],
            ["Lesion runs (slice numbers)", e["runs"]],
            ["Extent along the stack", length],
            ["Smoothing", smoother]]
    return {"sentence": _extent_sentence(pred), "rows": rows}


def predict_row(source: str, pred: Any) -> dict[str, Any]:
    """predictions.csv's row for one stack."""
    d = pred.details
    ext = lesion_extent(pred)
    return {"input": source, "predicted": pred.label, "probability": round(pred.probability, 6),
            **{f"p_{c}": round(v, 6) for c, v in pred.probabilities.items()},
            "n_slices": d["n_slices"], "n_lesion_slices": d["n_lesion_slices"],
            "first_slice": d["first_slice"], "last_slice": d["last_slice"],
            "lesion_runs": _runs_text(d["lesion_runs_numbers"]), "extent_mm": ext["length_mm"],
            "n_lesion_slices_raw": d["n_lesion_slices_raw"],
            "smoother": d["smoother"], "slice_labels": "".join(map(str, d["slice_labels"]))}


def slice_rows(source: str, pred: Any) -> list[dict[str, Any]]:
    """slices.csv's rows for one stack (one per slice)."""
    d = pred.details
    return [{"input": source, "index": i, "slice_number": n, "probability_raw": round(float(p), 6),
             "label_raw": lr, "probability_smoothed": round(float(ps), 6), "label": lab}
            for i, (n, p, lr, ps, lab) in enumerate(zip(d["slice_numbers"], pred.slice_scores, d["slice_labels_raw"],
                                                        d["slice_probability_smoothed"], d["slice_labels"]))]


def predict_stacks(predictor: Any, inputs: Sequence[str | Path], out: str | Path, log: Log | None = None) -> Path:
    """predictions.csv (one row per stack) and slices.csv (one row per slice) for a slice-labelling RUN."""
    log = logger_or(log)
    out = Path(out)
    rows, per_slice = [], []
    for f in inputs:
        image, numbers = read_stack(f)
        with naming(f):
            pred = predictor.predict(image, numbers=numbers)
        rows.append(predict_row(str(f), pred))
        per_slice.extend(slice_rows(str(f), pred))
        r = rows[-1]
        log(f"{f}: {r['predicted']}" + (f", slices {r['lesion_runs']} ({r['n_lesion_slices']} of {r['n_slices']})"
                                        if r["n_lesion_slices"] else f" ({r['n_slices']} slices)"))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "slices.csv", per_slice)
    write_csv(out / "predictions.csv", rows)
    log(f"wrote {out / 'predictions.csv'} and {out / 'slices.csv'}")
    return out / "predictions.csv"


def report_stacks(predictor: Any, inputs: Sequence[str | Path], out: str | Path, include_phi: bool = False,
                  log: Log | None = None) -> dict[str, Any]:
    """report.html + report.pdf per stack (a batch: one folder each + index.html) with the per-slice probability
    chart and the lesion slices as key images; also predictions.csv and slices.csv beside them."""
    from meddx.report import render_batch, render_study_report

    log = logger_or(log)
    out = Path(out)
    studies, rows, per_slice = [], [], []
    for f in inputs:
        image, numbers = read_stack(f)
        with naming(f):
            pred = predictor.predict(image, numbers=numbers)
        s = pred.to_study(str(f))
        s["note"] = _extent_sentence(pred)
        s["lesion_extent"] = _extent_report(pred)
        studies.append(s)
        rows.append(predict_row(str(f), pred))
        per_slice.extend(slice_rows(str(f), pred))
    info = predictor.info.to_dict()
    if len(studies) == 1:
        paths = render_study_report(studies[0], info, out, include_phi=include_phi)
        log(f"{inputs[0]}: {studies[0]['note']}")
        log(f"wrote {paths['html']} and {paths['pdf']}")
    else:
        paths = render_batch(studies, info, out, include_phi=include_phi)
        log(f"wrote {len(studies)} reports and {paths['index']}")
    write_csv(out / "slices.csv", per_slice)
    write_csv(out / "predictions.csv", rows)
    return paths


def _extent_sentence(pred: Any) -> str:
    d = pred.details
    if not d["n_lesion_slices"]:
        return f"No slice labelled as lesion ({d['n_slices']} slices, {d['smoother'].upper()} smoothing)."
    length = lesion_extent(pred)["length_mm"]
    mm = f", {length:.1f} mm along the stack" if length is not None else ""
    return (f"Lesion on {d['n_lesion_slices']} of {d['n_slices']} slices, slice {d['first_slice']} to "
            f"{d['last_slice']}{mm} (runs: {_runs_text(d['lesion_runs_numbers'])}; {d['smoother'].upper()} "
            "smoothing).")
