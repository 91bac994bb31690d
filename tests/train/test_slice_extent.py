"""A slice-labelling report says which slices hold the lesion and how far it reaches along the stack: first-last
slice, number of slices, runs, and the length in mm when the input carries the slice spacing (a NIfTI volume);
"unknown" for a folder of PNG slices. predictions.csv gains `extent_mm`."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from meddx.cli import main

from .test_slice_labelling_cli import N_SLICES, write_stacks

DZ = 2.5  # mm between slices in the NIfTI copy


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("stacks")
    truth = write_stacks(root, n=6, seed=3)
    run = tmp_path_factory.mktemp("run") / "hmm"
    assert main(["train", str(root), "--task", "slice-labelling", "--smoother", "hmm", "--out", str(run)]) == 0
    return root, run, truth


def _row(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))[0]


def _volume(root: Path, pid: str, out: Path) -> Path:
    import nibabel as nib
    from PIL import Image

    vol = np.stack([np.asarray(Image.open(root / pid / f"{pid}_{t + 1}.png")) for t in range(N_SLICES)])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.diag([0.9, 0.9, DZ, 1.0])), out)
    return out


def test_extent_in_mm_when_the_spacing_is_known(labelled: tuple, tmp_path: Path) -> None:
    root, run, truth = labelled
    pid = sorted(truth)[0]
    vol = _volume(root, pid, tmp_path / "vol.nii.gz")
    assert main(["report", str(run), str(vol), "--out", str(tmp_path / "rep")]) == 0
    row = _row(tmp_path / "rep" / "predictions.csv")
    first, last, n = int(row["first_slice"]), int(row["last_slice"]), int(row["n_lesion_slices"])
    assert row["predicted"] == "lesion" and n > 0
    a, b = truth[pid]  # [start, stop) indices of the drawn lesion; a NIfTI's slice numbers are its indices
    assert abs(first - a) <= 1 and abs(last - (b - 1)) <= 1
    length = (last - first + 1) * DZ
    assert float(row["extent_mm"]) == pytest.approx(length)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<h2>Lesion extent along the stack</h2>" in html
    assert f"<tr><th>First–last lesion slice</th><td>{first}–{last}</td></tr>" in html
    assert f"<tr><th>Slices with lesion</th><td>{n} of {N_SLICES}</td></tr>" in html
    assert f"{length:.1f} mm ({last - first + 1} slices × {DZ:.3g} mm)" in html
    assert f"slice {first} to {last}, {length:.1f} mm along the stack" in html
    assert "Candidate lesions" not in html  # a slice labeller has no heatmap regions
    if shutil.which("pdftotext"):  # the PDF carries the same table
        text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "rep" / "report.pdf"), "-"],
                              capture_output=True, text=True, check=True).stdout
        assert "Lesion extent along the stack" in text and f"{length:.1f} mm" in text


def test_extent_without_spacing_says_unknown(labelled: tuple, tmp_path: Path) -> None:
    root, run, truth = labelled
    pid = sorted(truth)[1]
    assert main(["report", str(run), str(root / pid), "--out", str(tmp_path / "rep")]) == 0
    row = _row(tmp_path / "rep" / "predictions.csv")
    assert row["extent_mm"] == "" and int(row["n_lesion_slices"]) > 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert f"<tr><th>First–last lesion slice</th><td>{row['first_slice']}–{row['last_slice']}</td></tr>" in html
    assert "unknown: the slices carry no spacing" in html and " mm along the stack" not in html
    # predict writes the same column
    assert main(["predict", str(run), str(root / pid), "--out", str(tmp_path / "pred")]) == 0
    assert _row(tmp_path / "pred" / "predictions.csv")["extent_mm"] == ""
