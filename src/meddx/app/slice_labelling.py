"""`meddx predict` / `meddx report` for a slice-labelling RUN: which slices of each stack hold the lesion.

INPUT is a stack: a folder of numbered slices (`<name>_<n>.png|tif`, masks `*_mask.*` ignored), a DICOM series
folder or a 3D volume (slices along its first axis). predictions.csv has one row per stack (the lesion's extent:
first-last slice number, slice count, runs) and slices.csv one row per slice (raw and smoothed probability/label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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


def predict_row(source: str, pred: Any) -> dict[str, Any]:
    """predictions.csv's row for one stack."""
    d = pred.details
    return {"input": source, "predicted": pred.label, "probability": round(pred.probability, 6),
            **{f"p_{c}": round(v, 6) for c, v in pred.probabilities.items()},
            "n_slices": d["n_slices"], "n_lesion_slices": d["n_lesion_slices"],
            "first_slice": d["first_slice"], "last_slice": d["last_slice"],
            "lesion_runs": _runs_text(d["lesion_runs_numbers"]), "n_lesion_slices_raw": d["n_lesion_slices_raw"],
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
    return (f"Lesion on {d['n_lesion_slices']} of {d['n_slices']} slices, slice {d['first_slice']} to "
            f"{d['last_slice']} (runs: {_runs_text(d['lesion_runs_numbers'])}; {d['smoother'].upper()} smoothing).")
