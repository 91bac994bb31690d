"""Never mix patients, never show a partial result as complete, never leak identifiers (issue 19 parts 3 and 7).

Output folders appear whole or not at all; a folder holding another study's outputs is refused; DICOM series
with gaps, duplicates or unreadable slices are refused or flagged; by default no patient name, ID, birth date,
free-text description or input file name reaches predictions.csv, report.html/pdf, logs or output file names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from meddx.cli import main
from meddx.io import read_image

from tests.conftest import require
from tests.faults.hostile_cases import DEMO_CLS, png, series

PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDescription", "SeriesDescription",
                "ProtocolName", "InstitutionName", "AccessionNumber", "ReferringPhysicianName", "StudyDate")


def _deid_file(*parts: str) -> Path:
    deid_data = pytest.importorskip("deid_data")
    return require(Path(deid_data.__file__).parent / "data" / Path(*parts))


def _phi_values(*files: Path) -> set[str]:
    """Identifying values of the DICOM files (names also as 'Last First'), plus their file and folder names."""
    values: set[str] = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in PHI_KEYWORDS:
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 5:
                values.add(v)
                if kw == "PatientName":
                    values.update(p for p in v.split("^") if len(p) >= 5)
    return values


def _texts(out: Path) -> dict[str, str]:
    """Every text an output folder shows: its file names, text files, and the PDF's text (pdftotext)."""
    texts = {"<file names>": "\n".join(str(p.relative_to(out)) for p in out.rglob("*"))}
    for p in out.rglob("*"):
        if p.suffix in (".csv", ".html", ".json", ".txt"):
            texts[str(p)] = p.read_text(encoding="utf-8", errors="replace")
        elif p.suffix == ".pdf" and shutil.which("pdftotext"):
            texts[str(p)] = subprocess.run(["pdftotext", str(p), "-"], capture_output=True, text=True).stdout
            if shutil.which("pdfinfo"):  # title, author... of the document
                texts[str(p)] += subprocess.run(["pdfinfo", str(p)], capture_output=True, text=True).stdout
    return texts


def _assert_no_phi(texts: dict[str, str], phi: set[str]) -> None:
    for where, text in texts.items():
        for value in phi:
            assert value.lower() not in text.lower(), f"{value!r} leaked into {where}"


@pytest.fixture
def phi_inputs(tmp_path: Path) -> tuple[list[Path], set[str]]:
    """deid-data DICOMs (a human CT and an animal DX) copied under names that identify the patient."""
    ct = _deid_file("humans", "ctbrain1.dcm")
    cat = _deid_file("animals", "cat.dcm")
    folder = tmp_path / "SIMPSON_HOMER_00007041776"
    folder.mkdir()
    inputs = [folder / "SIMPSON_HOMER_head.dcm", tmp_path / "Wetzel_James_16550.dcm"]
    shutil.copy(ct, inputs[0])
    shutil.copy(cat, inputs[1])
    phi = _phi_values(ct, cat) | {"SIMPSON_HOMER", "Wetzel_James", "00007041776"}
    return inputs, phi


def test_predict_outputs_and_logs_carry_no_phi_by_default(phi_inputs, tmp_path: Path, capfd) -> None:
    inputs, phi = phi_inputs
    out = tmp_path / "pred"
    rc = main(["predict", str(DEMO_CLS), *map(str, inputs), "--out", str(out), "--heatmaps", "--allow-ood"])
    logs = capfd.readouterr()
    assert rc == 0, logs.err
    rows = (out / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["study_001", "study_002"]
    assert any(p.name.endswith(".npy") for p in out.rglob("*"))  # heatmap files exist and are checked by name
    _assert_no_phi({**_texts(out), "<stdout>": logs.out, "<stderr>": logs.err}, phi)


def test_include_phi_names_studies_by_their_inputs(phi_inputs, tmp_path: Path, capfd) -> None:
    inputs, _ = phi_inputs
    out = tmp_path / "pred"
    assert main(["predict", str(DEMO_CLS), str(inputs[0]), "--out", str(out), "--include-phi", "--allow-ood"]) == 0
    assert "SIMPSON_HOMER_head" in (out / "predictions.csv").read_text()


def test_report_carries_no_phi_by_default_and_shows_it_on_request(phi_inputs, tmp_path: Path, capfd) -> None:
    inputs, phi = phi_inputs
    out = tmp_path / "rep"
    rc = main(["report", str(DEMO_CLS), str(inputs[0]), "--out", str(out), "--allow-ood"])
    logs = capfd.readouterr()
    assert rc == 0, logs.err
    assert (out / "report.html").is_file() and (out / "report.pdf").is_file()
    _assert_no_phi({**_texts(out), "<stdout>": logs.out, "<stderr>": logs.err}, phi)
    html = (out / "report.html").read_text()
    assert "2023 (year only" in html  # the study date reduced to its year

    out2 = tmp_path / "rep_phi"
    assert main(["report", str(DEMO_CLS), str(inputs[0]), "--out", str(out2), "--allow-ood", "--include-phi"]) == 0
    html = (out2 / "report.html").read_text()
    assert "SIMPSON^HOMER" in html and "CT BRAIN WO IVCON" in html  # identifiers and free text only on request


def test_info_drops_free_text_and_shows_dates_as_the_report(phi_inputs, capfd) -> None:
    inputs, phi = phi_inputs
    for as_json in ([], ["--json"]):
        assert main(["info", str(inputs[0]), *as_json]) == 0
        text = capfd.readouterr().out.replace(str(inputs[0]), "<the user's own argument>")
        for value in phi:
            assert value.lower() not in text.lower(), value
        assert "2023 (year only" in text
    image = read_image(inputs[0])
    assert not {"StudyDescription", "SeriesDescription", "ProtocolName"} & set(image.metadata)


# -- DICOM SEG / SR: patient module kept by default, PS3.15 basic profile on request --------------------------

def _dicom_series_with_phi(tmp_path: Path) -> Path:
    return series(tmp_path / "Doe_Jane_PID-8841", [0.0, 2.0, 4.0, 6.0, 8.0])


def test_seg_sr_keep_patient_module_by_default_and_deidentify_on_request(tmp_path: Path, capfd) -> None:
    src = _dicom_series_with_phi(tmp_path)
    out = tmp_path / "rep"
    assert main(["report", str(DEMO_CLS), str(src), "--out", str(out), "--allow-ood"]) == 0
    sr = pydicom.dcmread(out / "finding_sr.dcm")
    assert str(sr.PatientName) == "Doe^Jane" and sr.PatientID == "PID-8841"  # files with its study in the PACS
    assert sr.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.3"

    pytest.importorskip("dicomanonymizer")
    out2 = tmp_path / "rep_deid"
    assert main(["report", str(DEMO_CLS), str(src), "--out", str(out2), "--allow-ood", "--deidentify-dicom"]) == 0
    written = sorted(out2.glob("*.dcm"))
    assert written
    study_uids = set()
    for f in written:
        ds = pydicom.dcmread(f)
        text = str(ds)
        for value in ("Doe^Jane", "PID-8841", "19610214", "20240102", "ACC7781", "Jane Doe", "STU-5521",
                      "House^Gregory", "1.2.826.0.1.3680043.8.498.3"):
            assert value not in text, (f.name, value)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        study_uids.add(ds.StudyInstanceUID)
    assert len(study_uids) == 1  # SEG and SR still belong to one (new) study
    if (out2 / "finding_sr.dcm").exists():
        assert len(pydicom.dcmread(out2 / "finding_sr.dcm").ContentSequence) > 0  # the finding is kept


# -- series integrity ------------------------------------------------------------------------------------------

def test_series_gap_is_flagged_in_metadata_report_and_stderr(tmp_path: Path, capfd) -> None:
    src = series(tmp_path / "gap", [0.0, 2.0, 4.0, 10.0, 12.0])
    image = read_image(src)
    assert image.metadata["missing_slices"] == 2
    assert "slice(s) missing" in image.metadata["series_integrity"][0]
    out = tmp_path / "rep"
    assert main(["report", str(DEMO_CLS), str(src), "--out", str(out), "--allow-ood", "--no-dicom"]) == 0
    err = capfd.readouterr().err
    assert "meddx: warning: DICOM series integrity: 2 slice(s) missing" in err
    html = (out / "report.html").read_text()
    assert html.index("Incomplete series") < html.index("Finding")  # at the top, before the finding


def test_regular_series_is_not_flagged(tmp_path: Path) -> None:
    image = read_image(series(tmp_path / "ok", [0.0, 2.0, 4.0, 6.0]))
    assert "series_integrity" not in image.metadata and image.array.shape == (4, 64, 64)


def test_unreadable_slice_file_is_flagged(tmp_path: Path) -> None:
    src = series(tmp_path / "broken", [0.0, 2.0, 4.0, 6.0])
    good = (src / "IM0003.dcm").read_bytes()
    (src / "IM0009.dcm").write_bytes(good[:300])  # a slice cut inside its header
    image = read_image(src)
    assert image.array.shape[0] == 4
    assert any("1 DICOM file(s)" in n and "could not be read" in n for n in image.metadata["series_integrity"])


def test_slice_cut_inside_its_pixels_is_refused(tmp_path: Path) -> None:
    from meddx.errors import InputError

    src = series(tmp_path / "cut", [0.0, 2.0, 4.0, 6.0])
    good = (src / "IM0002.dcm").read_bytes()
    (src / "IM0002.dcm").write_bytes(good[:-3000])
    with pytest.raises(InputError, match="IM0002.dcm: truncated DICOM"):
        read_image(src)


def test_duplicated_instance_is_refused(tmp_path: Path) -> None:
    from meddx.errors import InputError

    src = series(tmp_path / "dup", [0.0, 2.0, 4.0])
    shutil.copy(src / "IM0000.dcm", src / "copy_of_first.dcm")
    with pytest.raises(InputError, match="duplicated instance"):
        read_image(src)


# -- output folders: whole or nothing, never mixed --------------------------------------------------------------

def test_rerun_of_same_command_replaces_its_outputs(tmp_path: Path, capfd) -> None:
    img = png(tmp_path / "a.png")
    out = tmp_path / "o"
    for _ in range(2):
        assert main(["predict", str(DEMO_CLS), str(img), "--out", str(out)]) == 0
    assert (out / "predictions.csv").read_text().count("study_001") == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no staging or old folder left


def test_other_inputs_into_the_same_out_are_refused(tmp_path: Path, capfd) -> None:
    out = tmp_path / "o"
    assert main(["predict", str(DEMO_CLS), str(png(tmp_path / "a.png")), "--out", str(out)]) == 0
    before = (out / "predictions.csv").read_text()
    capfd.readouterr()
    assert main(["predict", str(DEMO_CLS), str(png(tmp_path / "b.png", seed=3)), "--out", str(out)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds other outputs" in err[0] and str(out) in err[0]
    assert (out / "predictions.csv").read_text() == before  # the first study's outputs untouched


def test_failure_midway_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch, capfd) -> None:
    """The report's PDF fails after the HTML and key images were written: no report folder appears."""
    import meddx.report.study as study

    def broken_pdf(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(study, "write_pdf", broken_pdf)
    out = tmp_path / "rep"
    rc = main(["report", str(DEMO_CLS), str(png(tmp_path / "a.png")), "--out", str(out), "--allow-ood"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "disk is full" in err[0] and str(out) in err[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failure_replacing_earlier_outputs_keeps_them(tmp_path: Path, monkeypatch, capfd) -> None:
    import meddx.report.study as study

    img = png(tmp_path / "a.png")
    out = tmp_path / "rep"
    assert main(["report", str(DEMO_CLS), str(img), "--out", str(out), "--allow-ood"]) == 0
    html = (out / "report.html").read_bytes()
    monkeypatch.setattr(study, "write_pdf", lambda *a, **k: (_ for _ in ()).throw(OSError(30, "Read-only")))
    assert main(["report", str(DEMO_CLS), str(img), "--out", str(out), "--allow-ood"]) == 2
    assert (out / "report.html").read_bytes() == html and (out / "report.pdf").is_file()


def test_heatmap_arrays_complete_or_absent(tmp_path: Path, capfd) -> None:
    out = tmp_path / "o"
    assert main(["predict", str(DEMO_CLS), str(png(tmp_path / "a.png")), "--out", str(out), "--heatmaps",
                 "--allow-ood"]) == 0
    for f in (out / "heatmaps").glob("*.npy"):
        assert np.load(f).shape == (64, 64)
    marker = json.loads((out / ".meddx-output.json").read_text())
    assert set(marker) == {"key", "command"} and len(marker["key"]) == 64  # a hash, no paths


# -- stderr: nothing from third parties ------------------------------------------------------------------------

def test_tensorflow_and_third_party_lines_never_reach_stderr(tmp_path: Path) -> None:
    """A fresh process (TensorFlow imported from scratch): a successful predict prints nothing on stderr."""
    img = png(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "meddx.cli", "predict", str(DEMO_CLS), str(img), "--out",
                           str(tmp_path / "o"), "--heatmaps"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
